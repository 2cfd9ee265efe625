"""A workspace target run against a remote Spark Connect server, as on Databricks.

The jobs run as a separate process with ``LAKEHOUSE_ENGINE=connect`` and a catalog, against the
session's Sail server. The process cannot import ``deltalake`` or ``pysail`` (neither is in the
wheel's environment on Databricks): a local-only step (table upkeep with ``deltalake``, an
embedded engine) would fail the run instead of passing unnoticed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.settings import REPO_ROOT
from tests.conftest import SAMPLE_START

pytestmark = pytest.mark.delta

LOCAL_ONLY = ("deltalake", "pysail")


def test_a_catalog_target_runs_every_layer_without_local_only_steps(spark, sample_landing: Path, tmp_path: Path):
    from spark_jobs.engine import _sail_address

    if type(spark).__module__.split(".")[2] != "connect":
        pytest.skip("needs the Spark Connect engine (Sail) for a remote session")
    for schema in ("bronze", "silver", "bi"):  # what the bundle creates (resources/unity_catalog.yml)
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS lakehouse_ci.{schema}")
    blocked = tmp_path / "databricks_like_site"
    blocked.mkdir()
    for module in LOCAL_ONLY:  # shadow the local-only packages: importing one raises
        (blocked / f"{module}.py").write_text(f"raise ImportError('{module} is not installed on Databricks')\n")
    local_root = tmp_path / "local_tables"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO_ROOT)]),
        "LAKEHOUSE_ENGINE": "connect",
        # the same Spark Connect session: Sail keeps its catalog per session (Unity Catalog is shared)
        "SPARK_REMOTE": f"{_sail_address()}/;session_id={spark.client._session_id}",
        "LAKEHOUSE_ROOT": str(local_root),  # must stay unused: the tables are the catalog's
    }
    run = subprocess.run(
        [
            sys.executable, "-m", "spark_jobs.cli", "run", "--run-date", SAMPLE_START.isoformat(),
            "--env", "ci", "--catalog", "lakehouse_ci", "--gold-schema", "bi", "--landing-root", str(sample_landing),
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert not local_root.exists()
    for table in (
        "lakehouse_ci.bronze.crm_cust_info",
        "lakehouse_ci.silver.crm_cust_info",
        "lakehouse_ci.bi.fact_sales",
    ):
        assert spark.catalog.tableExists(table), table
    facts = spark.table("lakehouse_ci.bi.fact_sales").count()
    assert facts > 0
    assert spark.table("lakehouse_ci.bi.sales_monthly_by_category_country").count() > 0  # a UC view
