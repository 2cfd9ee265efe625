"""A 3-day backfill through a real scheduler (``airflow standalone``: scheduler, dag-processor,
triggerer, API server, LocalExecutor on PostgreSQL) equals running the 3 days in order."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from local_databricks.server import LocalJobsApi
from spark_jobs.settings import REPO_ROOT, Settings
from tests.spark_jobs.test_pipeline import snapshot

pytestmark = [pytest.mark.slow, pytest.mark.delta]
START = date(2024, 1, 15)
DAYS = [START + timedelta(days=i) for i in range(3)]
DB = "lakehouse_backfill_test"
TOKEN = "backfill-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sql(query: str, *, database: str = DB, autocommit: bool = False) -> list[tuple]:
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


def _wait(what: str, predicate, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited while waiting for {what}:\n{log.read_text()[-3000:]}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def postgres_db():
    try:
        _sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", database="postgres", autocommit=True)
        _sql(f"CREATE DATABASE {DB}", database="postgres", autocommit=True)
    except Exception as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is needed for the scheduler test: {exc}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DB}"
    _sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", database="postgres", autocommit=True)


def test_three_day_backfill_through_the_scheduler_equals_running_in_order(tmp_path, postgres_db, spark):
    from spark_jobs.pipeline import run_layers
    from spark_jobs.sample_data import generate

    generate(tmp_path / "landing", scale=0.01, start_date=START, days=len(DAYS) - 1, seed=5)
    tables = tmp_path / "tables"
    job_env = {**os.environ, "LAKEHOUSE_ROOT": str(tables), "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing")}
    api = LocalJobsApi(state_dir=tmp_path / "jobs-api", token=TOKEN, workdir=REPO_ROOT, env=job_env).start()
    port = _free_port()
    home = tmp_path / "airflow-home"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow`
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_db,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW_CONN_DATABRICKS_DEFAULT": f"databricks://:{TOKEN}@127.0.0.1:{api.port}/http",
        "LAKEHOUSE_POLLING_SECONDS": "1",
        "LAKEHOUSE_RETRIES": "1",
        "LAKEHOUSE_RETRY_DELAY_SECONDS": "1",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    log = tmp_path / "standalone.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([airflow, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait("the API server", lambda: requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).ok,
              300, proc, log)  # fmt: skip
        _wait(
            "the DAG to be parsed",
            lambda: _sql("SELECT 1 FROM dag WHERE dag_id = 'ecommerce_lakehouse'"),
            180,
            proc,
            log,
        )
        _sql("UPDATE dag SET is_paused = false WHERE dag_id = 'ecommerce_lakehouse'")
        # Unpausing schedules the latest interval (today's empty batch): let it finish first.
        _wait("the scheduled run", lambda: _sql("SELECT 1 FROM dag_run WHERE run_type = 'scheduled' AND state IN ('success', 'failed')"),
              300, proc, log)  # fmt: skip
        subprocess.run(
            [airflow, "backfill", "create", "--dag-id", "ecommerce_lakehouse",
             "--from-date", DAYS[0].isoformat(), "--to-date", f"{DAYS[-1].isoformat()}T03:00:00+00:00",
             "--max-active-runs", "1"],
            env=env, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        done = "SELECT state FROM dag_run WHERE run_type = 'backfill'"
        _wait("the backfill", lambda: [s for (s,) in _sql(done)] == ["success"] * 3
              or any(s == "failed" for (s,) in _sql(done)), 600, proc, log)  # fmt: skip
        assert sorted(s for (s,) in _sql(done)) == ["success"] * 3, log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        api.stop()

    reference = Settings.from_env(
        {"LAKEHOUSE_ROOT": str(tmp_path / "ref"), "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing")}
    )
    for day in DAYS:
        run_layers(spark, reference, day)
    backfilled = Settings.from_env({"LAKEHOUSE_ROOT": str(tables), "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing")})
    assert snapshot(spark, backfilled) == snapshot(spark, reference)
    shutil.rmtree(home, ignore_errors=True)
