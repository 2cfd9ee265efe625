"""A 3-day backfill through a real scheduler (``airflow standalone``: scheduler, dag-processor,
triggerer, API server, LocalExecutor on PostgreSQL) equals running the 3 days in order."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from spark_jobs.settings import Settings
from tests.dags.standalone import DAG_ID, airflow_standalone, local_jobs_api, postgres_database
from tests.spark_jobs.test_pipeline import snapshot

pytestmark = [pytest.mark.slow, pytest.mark.delta]
START = date(2024, 1, 15)
DAYS = [START + timedelta(days=i) for i in range(3)]
TOKEN = "backfill-token"


def test_three_day_backfill_through_the_scheduler_equals_running_in_order(tmp_path, spark):
    from spark_jobs.pipeline import run_layers
    from spark_jobs.sample_data import generate

    generate(tmp_path / "landing", scale=0.01, start_date=START, days=len(DAYS) - 1, seed=5)
    tables = tmp_path / "tables"
    api = local_jobs_api(tmp_path, TOKEN)
    env = {
        "AIRFLOW_CONN_DATABRICKS_DEFAULT": f"databricks://:{TOKEN}@127.0.0.1:{api.port}/http",
        "LAKEHOUSE_POLLING_SECONDS": "1",
        "LAKEHOUSE_RETRIES": "1",
        "LAKEHOUSE_RETRY_DELAY_SECONDS": "1",
    }
    try:
        with postgres_database("lakehouse_backfill_test") as db, airflow_standalone(tmp_path, db, env) as airflow:
            # Unpausing schedules the latest interval (today's empty batch): let it finish first.
            airflow.wait("the scheduled run", lambda: set(airflow.run_states("scheduled")) & {"success", "failed"}, 300)
            airflow.airflow(
                "backfill", "create", "--dag-id", DAG_ID, "--from-date", DAYS[0].isoformat(),
                "--to-date", f"{DAYS[-1].isoformat()}T03:00:00+00:00", "--max-active-runs", "1",
            )  # fmt: skip
            airflow.wait(
                "the backfill",
                lambda: airflow.run_states("backfill") == ["success"] * 3 or "failed" in airflow.run_states("backfill"),
                600,
            )
            assert airflow.run_states("backfill") == ["success"] * 3, airflow.tail()
    finally:
        api.stop()

    reference = Settings.from_env(
        {"LAKEHOUSE_ROOT": str(tmp_path / "ref"), "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing")}
    )
    for day in DAYS:
        run_layers(spark, reference, day)
    backfilled = Settings.from_env({"LAKEHOUSE_ROOT": str(tables), "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "landing")})
    assert snapshot(spark, backfilled) == snapshot(spark, reference)
