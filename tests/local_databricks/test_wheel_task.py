"""``python_wheel_task`` runs as on Databricks: the entry point is called, its return value is
ignored, and only an exception (any ``SystemExit`` included) fails the task. Real local Jobs API,
real subprocesses, real Delta tables."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from local_databricks.server import LocalJobsApi
from spark_jobs.settings import REPO_ROOT
from tests.local_databricks.conftest import TOKEN
from tests.local_databricks.test_jobs_api import wait_terminal

BATCH = date(2024, 1, 15)


def wheel_task(key: str, package: str, entry_point: str, *params: str) -> dict:
    return {
        "task_key": key,
        "python_wheel_task": {"package_name": package, "entry_point": entry_point, "parameters": list(params)},
    }


def task_outputs(hook, run_id: int) -> dict[str, dict]:
    return {t["task_key"]: hook.get_run_output(t["run_id"]) for t in hook.get_run(run_id)["tasks"]}


@pytest.mark.delta
@pytest.mark.slow
def test_a_failed_expectation_fails_the_wheel_task_and_get_output_names_it(hook, jobs_api, tmp_path):
    """The same corrupted delivery as the alert test: silver's expectation must fail the run. With
    an entry point that returned 1 instead of raising, this run would be SUCCESS."""
    from spark_jobs.sample_data import generate

    generate(tmp_path / "landing", scale=0.01, start_date=BATCH, seed=3)
    sales = tmp_path / "landing" / BATCH.isoformat() / "source_crm" / "sales_details.csv"
    lines = sales.read_text().splitlines()
    bad = [",".join([*line.split(",")[:6], "", "1", ""]) for line in lines[1:60]]  # no sales, no price
    sales.write_text("\r\n".join([lines[0], *bad, *lines[60:]]) + "\r\n")
    params = ["--run-date", BATCH.isoformat()]
    run_id = hook.submit_run(
        {
            "run_name": "dq",
            "tasks": [
                wheel_task("bronze", "ecommerce-lakehouse", "lakehouse_task", "bronze", *params),
                wheel_task("silver", "ecommerce-lakehouse", "lakehouse_task", "silver", *params),
            ],
        }
    )
    state = wait_terminal(hook, run_id, timeout=300)
    assert state.result_state == "FAILED"
    outputs = task_outputs(hook, run_id)
    assert "error" not in outputs["bronze"]
    error = outputs["silver"]["error"]
    assert error.startswith("DataQualityError: [LAKEHOUSE_DQ_FAILED] data quality check failed for crm_sales_details")
    assert "sales_equals_quantity_times_price" in error
    assert "Traceback (most recent call last)" in outputs["silver"]["error_trace"]
    assert "raise" in outputs["silver"]["error_trace"]  # the job's own frames, not a scraped log line


@pytest.fixture
def demo_package(tmp_path: Path) -> Path:
    """An installed package (metadata on the path) whose entry points misbehave in known ways."""
    site = tmp_path / "site"
    (site / "demo_pkg").mkdir(parents=True)
    (site / "demo_pkg" / "__init__.py").write_text(
        "import sys\n"
        "def returns_one():\n    print('returning 1, args', sys.argv[1:])\n    return 1\n"
        "def exits_zero():\n    sys.exit(0)\n"
        "def raises():\n    raise LookupError('table silver.crm_sales_details does not exist')\n"
        "def not_in_metadata():\n    print('called as demo_pkg.not_in_metadata()')\n"
    )
    info = site / "demo_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[console_scripts]\n"
        "demo-returns-one = demo_pkg:returns_one\n"
        "demo-exits-zero = demo_pkg:exits_zero\n"
        "demo-raises = demo_pkg:raises\n"
    )
    return site


@pytest.fixture
def demo_api(tmp_path: Path, demo_package: Path):
    env = {**os.environ, "PYTHONPATH": str(demo_package)}
    api = LocalJobsApi(state_dir=tmp_path / "state", token=TOKEN, workdir=REPO_ROOT, env=env).start()
    yield api
    api.stop()


@pytest.fixture
def demo_hook(demo_api, monkeypatch):
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEMO", f"databricks://:{TOKEN}@127.0.0.1:{demo_api.port}/http")
    return DatabricksHook(databricks_conn_id="databricks_demo", retry_limit=2, retry_delay=0.1)


def _run_alone(hook, entry_point: str, *params: str) -> tuple[str, dict]:
    run_id = hook.submit_run({"tasks": [wheel_task("t", "demo-pkg", entry_point, *params)]})
    state = wait_terminal(hook, run_id)
    [output] = task_outputs(hook, run_id).values()
    return str(state.result_state), output


def test_the_entry_points_return_value_is_ignored(demo_hook):
    result, output = _run_alone(demo_hook, "demo-returns-one", "--x", "1")
    assert result == "SUCCESS"
    assert "error" not in output
    assert "returning 1, args ['--x', '1']" in output["logs"]


def test_system_exit_0_fails_a_wheel_task(demo_hook):
    result, output = _run_alone(demo_hook, "demo-exits-zero")
    assert result == "FAILED"
    assert output["error"] == "SystemExit: 0"
    assert "sys.exit(0)" in output["error_trace"]


def test_an_exception_is_the_error_and_its_traceback_the_trace(demo_hook):
    result, output = _run_alone(demo_hook, "demo-raises")
    assert result == "FAILED"
    assert output["error"] == "LookupError: table silver.crm_sales_details does not exist"
    assert output["error_trace"].startswith("Traceback (most recent call last)")
    assert "in raises" in output["error_trace"]


def test_an_entry_point_missing_from_the_metadata_is_called_as_package_function(demo_hook):
    result, output = _run_alone(demo_hook, "not_in_metadata")
    assert result == "SUCCESS"
    assert "called as demo_pkg.not_in_metadata()" in output["logs"]


def test_an_unknown_entry_point_fails_with_a_clear_error(demo_hook):
    result, output = _run_alone(demo_hook, "nope")
    assert result == "FAILED"
    assert output["error"].startswith("EntryPointNotFoundError: No entry point 'nope' in the metadata of package")
