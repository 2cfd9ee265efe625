from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_databricks.server import LocalJobsApi
from spark_jobs.settings import REPO_ROOT

TOKEN = "test-token"


@pytest.fixture
def jobs_api(tmp_path: Path) -> Iterator[LocalJobsApi]:
    env = {
        **os.environ,
        "LAKEHOUSE_ROOT": str(tmp_path / "tables"),
        "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing"),
    }
    api = LocalJobsApi(state_dir=tmp_path / "state", token=TOKEN, workdir=REPO_ROOT, env=env).start()
    yield api
    api.stop()


def connection_uri(api: LocalJobsApi, token: str = TOKEN) -> str:
    return f"databricks://:{token}@127.0.0.1:{api.port}/http"


@pytest.fixture
def hook(jobs_api: LocalJobsApi, monkeypatch: pytest.MonkeyPatch):
    """The provider's real DatabricksHook, talking HTTP to the local service."""
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_LOCAL", connection_uri(jobs_api))
    return DatabricksHook(databricks_conn_id="databricks_local", retry_limit=4, retry_delay=0.1)
