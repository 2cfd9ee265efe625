"""The DAG as the dag-processor sees it: imports, topology, policy, serialisation."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from spark_jobs.settings import REPO_ROOT

DAGS = REPO_ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    started = time.perf_counter()
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=Path(DAGS), bundle_name="dags-folder")
    print(f"\nparsed {len(bag.dags)} DAG(s) in {time.perf_counter() - started:.2f}s")
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert list(dagbag.dags) == ["ecommerce_lakehouse"]


def test_topology_is_bronze_silver_gold(dagbag):
    dag = dagbag.dags["ecommerce_lakehouse"]
    assert [t.task_id for t in dag.topological_sort()] == ["bronze", "silver", "gold"]
    assert dag.get_task("silver").upstream_task_ids == {"bronze"}
    assert dag.get_task("gold").upstream_task_ids == {"silver"}


def test_policy_retries_timeouts_owner_tags_docs(dagbag):
    dag = dagbag.dags["ecommerce_lakehouse"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert "lakehouse" in dag.tags and dag.doc_md and "bronze" in dag.doc_md
    for task in dag.tasks:
        assert task.owner == "data-platform"
        assert task.retries >= 1 and task.retry_exponential_backoff
        assert task.execution_timeout is not None and task.execution_timeout > timedelta(0)
        assert task.max_active_tis_per_dag == 1  # a single writer per layer, also in backfills
        assert task.task_type == "LakehouseSubmitRunOperator"  # resumes only its own try's run
        assert task.json["tasks"][0]["python_wheel_task"]["entry_point"] == "lakehouse_task"  # returns or raises
        assert "batch_date(dag_run.conf, logical_date, dag_run.run_after)" in task.json["run_name"]
        assert "idempotency_token(dag_run, task_instance)" in task.json["idempotency_token"]


def test_alerting_is_wired(dagbag):
    """Task failures and retries, run failure and recovery, and a deadline on the whole run."""
    from lakehouse_airflow.alerts.messages import Kind
    from lakehouse_airflow.alerts.notifier import LakehouseAlertNotifier

    dag = dagbag.dags["ecommerce_lakehouse"]
    assert dag.on_failure_callback.kind is Kind.DAG_FAILED
    assert dag.on_success_callback.kind is Kind.RECOVERED
    for task in dag.tasks:
        assert [n.kind for n in task.on_failure_callback if isinstance(n, LakehouseAlertNotifier)] == [Kind.FAILED]
        assert [n.kind for n in task.on_retry_callback if isinstance(n, LakehouseAlertNotifier)] == [Kind.RETRY]
    [deadline] = dag.deadline
    assert deadline.interval == timedelta(hours=4)
    assert type(deadline.reference).__name__ == "DagRunQueuedAtDeadline"
    assert deadline.callback.path == "lakehouse_airflow.alerts.deadline.deadline_missed"


def test_dag_serialises(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dagbag.dags["ecommerce_lakehouse"])
    assert data["dag"]["dag_id"] == "ecommerce_lakehouse"


def test_dag_file_is_thin():
    source = (DAGS / "ecommerce_lakehouse.py").read_text()
    for forbidden in ("pyspark", "Variable.get", "requests.", "spark_jobs"):
        assert forbidden not in source, forbidden
