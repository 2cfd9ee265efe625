"""The compose tier: the real stack of docker-compose.yaml, brought up once for the whole tier.

Opt-in (it builds images and starts ten containers): ``make test-compose`` or ``pytest -m compose``.
A plain ``pytest`` skips it. Without a Docker engine it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spark_jobs.settings import REPO_ROOT
from tests.compose.stack import (
    Airflow,
    Compose,
    JobsApi,
    Mailpit,
    StackError,
    compose_command,
    docker_client,
    engine_running,
    wait_for,
)

ARTIFACTS = REPO_ROOT / ".lakehouse" / "compose-artifacts"
DAG_ID = "ecommerce_lakehouse"
TIMINGS: dict[str, float] = {}
NOTES: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "compose" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="compose tier: run it with `make test-compose` (pytest -m compose)")
    for item in items:
        if item.get_closest_marker("compose"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("compose tier timings (s)")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{step:<40} {seconds:7.1f}")
    for what, note in NOTES.items():
        terminalreporter.write_line(f"{what}: {note}")


class timed:
    """Records how long a step took (reported at the end, and in compose-artifacts/timings.json)."""

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        TIMINGS[self.step] = time.monotonic() - self.start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    compose: Compose
    airflow: Airflow
    mailpit: Mailpit
    jobs_api: JobsApi
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)


def _healthy(airflow: Airflow) -> dict[str, object] | None:
    health = airflow.health()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return health if all(health.get(p, {}).get("status") == "healthy" for p in parts) else None


def _wait_until_up(compose: Compose, airflow: Airflow, mailpit: Mailpit) -> None:
    def up() -> bool | None:
        failed = compose.failed_containers()
        if failed:  # fail now instead of waiting out the timeout
            raise pytest.fail.Exception(f"containers failed: {failed}\n{compose.run('logs', '--tail=80').stdout}")
        return _healthy(airflow) is not None or None

    wait_for("every Airflow component healthy (/api/v2/monitor/health)", up, timeout=600, interval=5)
    airflow.login()
    wait_for("the DAG to be parsed", lambda: airflow.api("GET", f"/dags/{DAG_ID}"), timeout=300, interval=5)
    wait_for("Mailpit's API", lambda: mailpit.subjects() is not None or None, timeout=120)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Builds and starts the stack (own project name, free host ports, own data folder), waits for
    health, and always ends with ``down -v``, failure or not."""
    # .ci/run sets LAKEHOUSE_COMPOSE_REQUIRED where it provisioned Docker: a skip would hide a failure
    unavailable = pytest.fail if os.environ.get("LAKEHOUSE_COMPOSE_REQUIRED") else pytest.skip
    docker = docker_client()
    if docker is None or not engine_running(docker):
        unavailable("compose tier: no Docker engine here (install Docker, or run ../shared/tools/docker/provision.sh)")
    assert docker is not None
    command = compose_command(docker)
    if command is None:
        unavailable("compose tier: neither `docker compose` (v2) nor `docker-compose` (v1) is installed")
    assert command is not None
    ports = {"AIRFLOW_PORT": _free_port(), "JOBS_API_PORT": _free_port(), "MAILPIT_PORT": _free_port()}
    data_dir = REPO_ROOT / ".lakehouse" / "compose-test"
    data_dir.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    compose = Compose(
        command=command,
        docker=docker,
        project_dir=REPO_ROOT,
        project="lakehouse-compose-test",
        env={**{k: str(v) for k, v in ports.items()}, "LAKEHOUSE_DATA_DIR": str(data_dir)},
    )
    compose.run("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
    try:
        with timed("build (docker compose build)"):
            compose.run("build")
        # a fresh data folder (written by root in the containers: removed from a container too)
        compose.run(
            "run", "--rm", "--no-deps", "-T", "sample-data", "sh", "-c", "rm -rf /lakehouse/landing /lakehouse/tables /lakehouse/jobs-api"
        )  # fmt: skip
        airflow = Airflow(f"http://127.0.0.1:{ports['AIRFLOW_PORT']}")
        mailpit = Mailpit(f"http://127.0.0.1:{ports['MAILPIT_PORT']}")
        with timed("up -d --build until healthy"):
            compose.run("up", "-d", "--build")
            _wait_until_up(compose, airflow, mailpit)
        token = compose.exec("local-databricks", "cat /run/lakehouse-secrets/jobs_api_token").strip()
        jobs_api = JobsApi(f"http://127.0.0.1:{ports['JOBS_API_PORT']}", token)
        yield Stack(compose, airflow, mailpit, jobs_api, data_dir, ports)
    finally:
        logs = compose.run("logs", "--no-color", "--timestamps", check=False, timeout=300)
        (ARTIFACTS / "compose.log").write_text(logs.stdout + logs.stderr)
        with timed("down -v"):
            down = compose.run("down", "-v", "--remove-orphans", check=False, timeout=600)
        (ARTIFACTS / "timings.json").write_text(json.dumps({"seconds": TIMINGS, "notes": NOTES}, indent=2) + "\n")
        if down.returncode != 0:
            raise StackError(f"docker compose down -v failed:\n{down.stdout}\n{down.stderr}")


@pytest.fixture(scope="session")
def unpaused(stack: Stack) -> Stack:
    """The DAG unpaused, as the UI's toggle does (a paused DAG's runs stay queued)."""
    stack.airflow.unpause(DAG_ID)
    return stack
