"""Shared fixtures: ONE Spark session per test run, on the engine chosen with ``--engine``.

``--engine sail`` (default): embedded Sail, real Delta tables. ``--engine spark``: classic JVM
Spark, used to prove the transforms have the same semantics on real Spark; tests marked
``delta`` are skipped there unless ``LAKEHOUSE_DELTA_JARS`` provides the Delta jars.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from spark_jobs.settings import Engine, Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=[Engine.SAIL.value, Engine.SPARK.value],
        default=os.environ.get("LAKEHOUSE_TEST_ENGINE", Engine.SAIL.value),
        help="Spark engine for the tests (default: sail)",
    )


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
