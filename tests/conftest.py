"""Shared fixtures: ONE Spark session per test run, on the engine chosen with ``--engine``.

``--engine sail`` (default): embedded Sail, real Delta tables. ``--engine spark``: classic JVM
Spark, used to prove the transforms have the same semantics on real Spark; tests marked
``delta`` are skipped there unless ``LAKEHOUSE_DELTA_JARS`` provides the Delta jars.
"""

from __future__ import annotations

import atexit
import email
import email.policy
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.settings import REPO_ROOT, Engine, Settings


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def _own_postgres_database() -> str | None:
    """A PostgreSQL database of this test process's own (dropped at its exit), so that test
    processes running side by side (``make test`` runs two) never reset each other's Airflow
    metadata; None where PostgreSQL does not run here."""
    if not _postgres_reachable():
        return None
    import psycopg2

    name = f"lakehouse_test_{os.getpid()}"

    def run(statement: str) -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    run(f"CREATE DATABASE {name}")
    atexit.register(run, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return name


# Airflow reads its configuration when first imported: set it before any test imports airflow.
# Metadata DB: PostgreSQL (as in production) when it runs on this machine, else SQLite.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="lakehouse-airflow-test-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in os.environ:
    _database = _own_postgres_database()
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{_database}"
        if _database
        else f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
    )


# py4j logs "closing down" from an atexit hook after pytest has closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


def pytest_report_header() -> str:
    return f"airflow metadata db: {os.environ['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=[Engine.SAIL.value, Engine.SPARK.value],
        default=os.environ.get("LAKEHOUSE_TEST_ENGINE", Engine.SAIL.value),
        help="Spark engine for the tests (default: sail)",
    )


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata DB (PostgreSQL or SQLite, see above), once per test run."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Engine:
    return Engine(request.config.getoption("--engine"))


@pytest.fixture(scope="session")
def spark(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from spark_jobs.engine import get_spark

    settings = Settings.from_env(
        {"LAKEHOUSE_ENGINE": engine.value, "LAKEHOUSE_ROOT": str(tmp_path_factory.mktemp("unused"))}
    )
    session = get_spark(settings)
    yield session
    if engine is Engine.SPARK:
        session.stop()


@pytest.fixture(autouse=True)
def _skip_delta_tests_without_delta(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("delta") is None:
        return
    from spark_jobs.engine import supports_delta

    session = request.getfixturevalue("spark")
    if not supports_delta(session):
        pytest.skip("Delta Lake is not available on this engine (set LAKEHOUSE_DELTA_JARS)")


@pytest.fixture(autouse=True)
def _airflow_settings_read_afresh() -> Iterator[None]:
    """The Airflow side reads its settings once per process (``lakehouse_airflow.config``): each test
    reads them from its own environment, as set by its fixtures and ``monkeypatch``."""
    from lakehouse_airflow.config import clear_cached_config

    clear_cached_config()
    yield
    clear_cached_config()


@pytest.fixture
def settings(tmp_path: Path, engine: Engine) -> Settings:
    """Settings pointing at fresh, empty landing and table folders for one test."""
    return Settings.from_env(
        {
            "LAKEHOUSE_ENGINE": engine.value,
            "LAKEHOUSE_ROOT": str(tmp_path / "tables"),
            "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing"),
        }
    )


@pytest.fixture(scope="session")
def sample_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated exports at scale 0.01: a history batch and three daily increments (read-only)."""
    from spark_jobs.sample_data import generate

    root = tmp_path_factory.mktemp("sample_landing")
    generate(root, scale=0.01, start_date=SAMPLE_START, days=3, seed=7)
    return root


SAMPLE_START = date(2014, 1, 29)


# --- real alert receivers on loopback: an SMTP server (aiosmtpd) and a Slack-style webhook ---


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpReceiver:
    port: int
    messages: list[email.message.Message] = field(default_factory=list)


def email_text(message: email.message.Message) -> str:
    """The plain-text part of a received alert email (SMTP transports lines as CRLF)."""
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return bytes(part.get_payload(decode=True)).decode().replace("\r\n", "\n")


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    from aiosmtpd.controller import Controller

    receiver = SmtpReceiver(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            # policy=default: headers come back decoded and unfolded, as a mail client shows them
            receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    yield receiver
    controller.stop()


@dataclass
class WebhookReceiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def slack_receiver() -> Iterator[WebhookReceiver]:
    port = free_port()
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{port}/services/T000/B000/secret")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.posts.append(json.loads(body))
            self.send_response(receiver.status)
            self.end_headers()
            self.wfile.write(b"ok" if receiver.status == 200 else b"internal_error")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def alert_connections(monkeypatch, smtp_receiver, slack_receiver):
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_receiver.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "lakehouse@example.com"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(smtp))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT", json.dumps({"conn_type": "slackwebhook", "password": slack_receiver.url})
    )
    monkeypatch.setenv("LAKEHOUSE_ALERT_EMAILS", "oncall@example.com")
    return smtp_receiver, slack_receiver
