"""A real Airflow (``airflow standalone``: scheduler, dag-processor, triggerer, API server,
LocalExecutor) on its own PostgreSQL database, for the tests that need the scheduler itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from local_databricks.server import LocalJobsApi
from spark_jobs.settings import REPO_ROOT
from tests.conftest import free_port

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "ecommerce_lakehouse"


def local_jobs_api(tmp_path: Path, token: str) -> LocalJobsApi:
    """The local Databricks Jobs API, started, running our jobs over ``tmp_path/landing`` into
    ``tmp_path/tables`` (the DAG's tasks reach it through ``AIRFLOW_CONN_DATABRICKS_DEFAULT``)."""
    env = {
        **os.environ,
        "LAKEHOUSE_ROOT": str(tmp_path / "tables"),
        "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing"),
    }
    return LocalJobsApi(state_dir=tmp_path / "jobs-api", token=token, workdir=REPO_ROOT, env=env).start()


def sql(query: str, *, database: str, autocommit: bool = False) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its name) for one Airflow; skips the test where PostgreSQL is not running.

    The name carries the test process's id, so that two test runs on one machine (two checkouts)
    never drop each other's database."""
    name = f"{name}_{os.getpid()}"
    try:
        sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres", autocommit=True)
        sql(f"CREATE DATABASE {name}", database="postgres", autocommit=True)
    except Exception as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is needed for the scheduler tests: {exc}")
    try:
        yield name
    finally:
        sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres", autocommit=True)


@dataclass
class Standalone:
    database: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def sql(self, query: str) -> list[tuple]:
        return sql(query, database=self.database)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"airflow standalone exited while waiting for {what}:\n{self.tail()}")
            try:
                if predicate():
                    return
            except Exception:
                pass
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def airflow(self, *args: str) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, check=True, capture_output=True, text=True, timeout=180)
        return out.stdout

    def run_states(self, run_type: str | None = None) -> list[str]:
        where = f"WHERE run_type = '{run_type}'" if run_type else ""
        return [s for (s,) in self.sql(f"SELECT state FROM dag_run {where} ORDER BY id")]

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextmanager
def airflow_standalone(tmp_path: Path, database: str, extra_env: Mapping[str, str]) -> Iterator[Standalone]:
    """Start ``airflow standalone`` with the repo's dags folder, wait until the DAG is parsed and
    unpause it (which schedules the latest interval); stop it (its whole process group) at the end."""
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow`
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        **extra_env,
    }
    log = tmp_path / "standalone.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    airflow = Standalone(database=database, env=env, proc=proc, log=log)
    try:
        airflow.wait(
            "the API server", lambda: requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).ok, 300
        )
        airflow.wait("the DAG to be parsed", lambda: airflow.sql(f"SELECT 1 FROM dag WHERE dag_id = '{DAG_ID}'"), 180)
        airflow.sql(f"UPDATE dag SET is_paused = false WHERE dag_id = '{DAG_ID}'")
        yield airflow
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
