"""The DAG end to end: real Airflow (``dag.test()``, metadata in PostgreSQL when available) →
DatabricksSubmitRunOperator → real HTTP → local Jobs API → ``lakehouse`` subprocesses → Delta."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from spark_jobs.settings import REPO_ROOT
from tests.conftest import email_text
from tests.dags.standalone import local_jobs_api

pytestmark = [pytest.mark.slow, pytest.mark.delta]
BATCH = date(2024, 1, 15)
TOKEN = "e2e-token"


@pytest.fixture
def lakehouse(tmp_path, monkeypatch, airflow_db):
    from spark_jobs.sample_data import generate

    generate(tmp_path / "landing", scale=0.01, start_date=BATCH, seed=3)
    api = local_jobs_api(tmp_path, TOKEN)
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", f"databricks://:{TOKEN}@127.0.0.1:{api.port}/http")
    for key, value in {
        "LAKEHOUSE_POLLING_SECONDS": "1",
        "LAKEHOUSE_RETRIES": "1",
        "LAKEHOUSE_RETRY_DELAY_SECONDS": "1",
        # dag.test() cannot evaluate deadlines (no scheduler; tested in test_alerts_scheduler.py) and
        # in Airflow 3.3.2 fails a successful run of a DAG that has one (apache/airflow#73428).
        "LAKEHOUSE_DEADLINE_SECONDS": "0",
    }.items():
        monkeypatch.setenv(key, value)
    _close_incidents()
    yield api, tmp_path / "tables"
    api.stop()


def _close_incidents() -> None:
    """Each test starts with no open alert incident (the register is an Airflow Variable per batch)."""
    from airflow.models.variable import Variable

    Variable.delete(f"lakehouse_alerts.incident.ecommerce_lakehouse.{BATCH}")


def run_dag(batch: date | None, conf: dict | None = None):
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO_ROOT / "dags"), bundle_path=REPO_ROOT / "dags", bundle_name="dags-folder")
    assert bag.import_errors == {}
    dag = bag.dags["ecommerce_lakehouse"]
    logical_date = datetime(batch.year, batch.month, batch.day, 3, tzinfo=UTC) if batch else None
    return dag.test(logical_date=logical_date, run_conf=conf)


def counts(tables: Path) -> dict[str, int]:
    from deltalake import DeltaTable

    return {
        f"{layer}.{p.name}": DeltaTable(str(p)).to_pyarrow_dataset().count_rows()
        for layer in ("bronze", "silver", "gold")
        for p in sorted((tables / layer).iterdir())
        if p.name != "dq_metrics" and (p / "_delta_log").is_dir()  # not the writers' lock files
    }


def test_dag_runs_the_three_layers_through_the_local_jobs_api(lakehouse):
    api, tables = lakehouse
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    got = counts(tables)
    assert got["gold.fact_sales"] > 500 and got["gold.dim_customers"] > 100
    runs = requests.get(
        f"{api.base_url}/api/2.2/jobs/runs/list", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).json()["runs"]
    assert sorted(r["run_name"] for r in runs) == [
        f"lakehouse-local-{layer}-{BATCH}" for layer in ("bronze", "gold", "silver")
    ]
    page = requests.get(runs[0]["run_page_url"], timeout=5)
    assert page.status_code == 200 and "gold" in page.text
    ti = dag_run.get_task_instance("gold")
    assert ti.state == "success"


def test_a_manual_run_reprocesses_the_batch_named_in_its_conf(lakehouse):
    """No logical date, ``{"batch_date": ...}`` in the conf: every layer gets that batch, and the
    wheel task gets only its own arguments (a DAG param would be forwarded as ``--batch_date=``)."""
    api, tables = lakehouse
    dag_run = run_dag(None, conf={"batch_date": BATCH.isoformat()})
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    runs = requests.get(
        f"{api.base_url}/api/2.2/jobs/runs/list", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).json()["runs"]
    assert sorted(r["run_name"] for r in runs) == [
        f"lakehouse-local-{layer}-{BATCH}" for layer in ("bronze", "gold", "silver")
    ]
    assert counts(tables)["gold.fact_sales"] > 500


def test_a_task_failing_once_is_retried_and_leaves_no_duplicates(lakehouse, tmp_path):
    api, tables = lakehouse
    api.faults.replace([{"task": "silver", "action": "fail", "times": 1, "message": "cluster lost"}])
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    assert api.faults.rules[0]["times"] == 0  # the failure did happen
    silver = dag_run.get_task_instance("silver")
    assert silver.try_number == 2
    first = counts(tables)
    run_dag(BATCH)  # and a whole re-run of the batch changes nothing
    assert counts(tables) == first
    assert first["silver.crm_sales_details"] == first["gold.fact_sales"]


def test_deferrable_operators_poll_through_the_trigger(lakehouse, monkeypatch):
    """With LAKEHOUSE_DEFERRABLE the operator defers; the provider's trigger polls the local Jobs
    API with aiohttp (GET parameters in a JSON body) until the runs finish."""
    _api, tables = lakehouse
    monkeypatch.setenv("LAKEHOUSE_DEFERRABLE", "true")
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    assert counts(tables)["gold.fact_sales"] > 500


def test_a_timed_out_task_cancels_its_databricks_run(lakehouse, monkeypatch):
    """execution_timeout → the operator's on_kill → runs/cancel: nothing keeps running on Databricks."""
    api, _tables = lakehouse
    api.faults.replace([{"task": "bronze", "action": "hang", "times": -1}])
    monkeypatch.setenv("LAKEHOUSE_TASK_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "0")
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("failed", "DagRunState.FAILED")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    [run] = requests.get(f"{api.base_url}/api/2.2/jobs/runs/list", headers=headers, timeout=5).json()["runs"]
    deadline = time.monotonic() + 30
    while run["state"]["life_cycle_state"] != "TERMINATED" and time.monotonic() < deadline:
        time.sleep(0.5)
        run = requests.get(
            f"{api.base_url}/api/2.2/jobs/runs/get?run_id={run['run_id']}", headers=headers, timeout=5
        ).json()
    assert run["state"]["result_state"] == "CANCELED"


def test_final_failure_sends_one_task_alert_and_one_run_summary(lakehouse, monkeypatch, alert_connections):
    """retries=2: nothing on the first two failures; after the third, one email + one Slack message
    for the task and one DAG-run summary (the DAG-level callback, under dag.test())."""
    api, _tables = lakehouse
    smtp, slack = alert_connections
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "2")
    api.faults.replace([{"task": "silver", "action": "fail", "times": -1, "message": "cluster terminated: spot loss"}])
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("failed", "DagRunState.FAILED")
    assert dag_run.get_task_instance("silver").try_number == 3
    assert [m["Subject"] for m in smtp.messages] == [
        f"[lakehouse][local] FAILED silver {BATCH}",
        f"[lakehouse][local] DAG FAILED ecommerce_lakehouse {BATCH}",
    ]
    assert [p["text"].split(" ", 1)[1] for p in slack.posts] == [m["Subject"] for m in smtp.messages]
    text = email_text(smtp.messages[0])
    assert "Try: 3/3" in text
    assert f"Batch date: {BATCH}" in text
    assert f"Databricks run: {api.base_url}/runs/" in text
    assert "RuntimeError: cluster terminated: spot loss" in text
    run_path = f"/dags/ecommerce_lakehouse/runs/{quote(dag_run.run_id)}"
    assert f"Airflow log: http://localhost:8080{run_path}/tasks/silver?try_number=3" in text
    summary = email_text(smtp.messages[1])
    assert "Failed tasks: silver\n" in summary and "Not run because of it: gold\n" in summary
    assert f"Airflow run: http://localhost:8080{run_path}\n" in summary


def test_the_next_success_after_a_failed_run_says_recovered_once(lakehouse, monkeypatch, alert_connections):
    api, _tables = lakehouse
    smtp, slack = alert_connections
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "0")
    api.faults.replace([{"task": "gold", "action": "fail", "times": 1, "message": "cluster lost"}])
    assert str(run_dag(BATCH).state) in ("failed", "DagRunState.FAILED")
    run_dag(BATCH)  # re-run of the batch: succeeds
    run_dag(BATCH)  # and again: a success after a success says nothing
    assert [m["Subject"] for m in smtp.messages] == [
        f"[lakehouse][local] FAILED gold {BATCH}",
        f"[lakehouse][local] DAG FAILED ecommerce_lakehouse {BATCH}",
        f"[lakehouse][local] RECOVERED ecommerce_lakehouse {BATCH}",
    ]
    recovered = email_text(smtp.messages[2])
    assert f"Detail: batch {BATCH} succeeded again; it had been failing since " in recovered
    assert "(gold failed)\n" in recovered
    assert slack.posts[2]["text"].startswith(":large_green_circle: [lakehouse][local] RECOVERED")


def test_an_expectation_failure_alert_carries_the_dq_summary(lakehouse, monkeypatch, alert_connections, tmp_path):
    _api, _tables = lakehouse
    smtp, slack = alert_connections
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "0")
    sales = tmp_path / "landing" / BATCH.isoformat() / "source_crm" / "sales_details.csv"
    lines = sales.read_text().splitlines()
    bad = [",".join([*line.split(",")[:6], "", "1", ""]) for line in lines[1:60]]  # no sales, no price
    sales.write_text("\r\n".join([lines[0], *bad, *lines[60:]]) + "\r\n")
    dag_run = run_dag(BATCH)
    assert str(dag_run.state) in ("failed", "DagRunState.FAILED")
    message, summary = smtp.messages
    assert message["Subject"] == f"[lakehouse][local] FAILED silver {BATCH}"
    assert summary["Subject"] == f"[lakehouse][local] DAG FAILED ecommerce_lakehouse {BATCH}"
    text = email_text(message)
    assert "Likely cause: a data-quality expectation failed" in text
    assert "Data quality:\ndata quality check failed for crm_sales_details" in text
    assert "sales_equals_quantity_times_price" in text and "BREACHED" in text
    assert "BREACHED" in slack.posts[0]["blocks"][-1]["text"]["text"]


def test_broken_receivers_change_no_outcome(lakehouse, monkeypatch, alert_connections, caplog):
    """SMTP refusing connections and the webhook answering 500: the failed run stays failed with
    the same tries, the next run still succeeds, and each lost alert is logged with its reason."""
    api, _tables = lakehouse
    _smtp, slack = alert_connections
    slack.status = 500
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        '{"conn_type": "smtp", "host": "127.0.0.1", "port": 1, "extra": {"disable_ssl": true, "disable_tls": true}}',
    )
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "0")
    api.faults.replace([{"task": "bronze", "action": "fail", "times": 1, "message": "cluster lost"}])
    failed = run_dag(BATCH)
    assert str(failed.state) in ("failed", "DagRunState.FAILED")
    bronze = failed.get_task_instance("bronze")
    assert (str(bronze.state), bronze.try_number) in (("failed", 1), ("TaskInstanceState.FAILED", 1))
    assert str(failed.get_task_instance("gold").state) in ("upstream_failed", "TaskInstanceState.UPSTREAM_FAILED")
    assert str(run_dag(BATCH).state) in ("success", "DagRunState.SUCCESS")
    lost = [r.getMessage() for r in caplog.records if "could not be delivered" in r.getMessage()]
    for subject in (
        f"FAILED bronze {BATCH}",
        f"DAG FAILED ecommerce_lakehouse {BATCH}",
        "RECOVERED ecommerce_lakehouse",
    ):
        assert any(subject in m and "alert email" in m for m in lost), subject
        assert any(subject in m and "alert Slack message" in m for m in lost), subject
    assert len(slack.posts) == 3  # each Slack alert was attempted once, and answered 500


def test_an_invalid_batch_date_in_the_conf_still_alerts(lakehouse, monkeypatch, alert_connections):
    """The templates cannot render, so the task fails before any Databricks run; the alerts say why."""
    smtp, _slack = alert_connections
    monkeypatch.setenv("LAKEHOUSE_RETRIES", "0")
    dag_run = run_dag(None, conf={"batch_date": "15/01/2024"})
    assert str(dag_run.state) in ("failed", "DagRunState.FAILED")
    assert [m["Subject"] for m in smtp.messages] == [
        "[lakehouse][local] FAILED bronze invalid batch_date '15/01/2024'",
        "[lakehouse][local] DAG FAILED ecommerce_lakehouse invalid batch_date '15/01/2024'",
    ]
    assert "Invalid isoformat string: '15/01/2024'" in email_text(smtp.messages[0])
