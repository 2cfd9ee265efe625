"""Alerts under a real scheduler (``airflow standalone`` on PostgreSQL), to real SMTP and webhook
receivers: the Deadline Alert (scheduler notices the miss, the triggerer runs our AsyncCallback
from the installed package) and the DAG-level callbacks (run by the dag-processor).

One Airflow, one story, in order:
1. the run scheduled on unpause finishes in time: no alert, its deadline is dropped;
2. a run whose silver task hangs passes its deadline: one DEADLINE MISSED alert while it runs;
   its Databricks run is then cancelled: one FAILED silver alert and one DAG FAILED summary;
3. the next run succeeds: one RECOVERED alert. Nothing else is sent.
"""

from __future__ import annotations

import json
import time
from datetime import date

import pytest
import requests

from tests.conftest import email_text
from tests.dags.standalone import DAG_ID, airflow_standalone, local_jobs_api, postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.delta]
BATCH = "2024-01-15"
TOKEN = "alerts-token"
DEADLINE_SECONDS = 60  # a whole run takes ~10 s here (30 s on a busy machine); the hanging one is late by construction


def test_deadline_failure_summary_and_recovery_under_the_scheduler(tmp_path, smtp_receiver, slack_receiver):
    from spark_jobs.sample_data import generate

    generate(tmp_path / "landing", scale=0.01, start_date=date.fromisoformat(BATCH), seed=11)
    api = local_jobs_api(tmp_path, TOKEN)
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_receiver.port,
        "extra": {"disable_ssl": True, "disable_tls": True},
    }
    env = {
        "AIRFLOW_CONN_DATABRICKS_DEFAULT": f"databricks://:{TOKEN}@127.0.0.1:{api.port}/http",
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
        "AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT": json.dumps({"conn_type": "slackwebhook", "password": slack_receiver.url}),
        "LAKEHOUSE_ALERT_EMAILS": "oncall@example.com",
        "LAKEHOUSE_ENV": "local",
        "LAKEHOUSE_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "LAKEHOUSE_POLLING_SECONDS": "1",
        "LAKEHOUSE_RETRIES": "0",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    subjects = lambda: [m["Subject"] for m in smtp_receiver.messages]  # noqa: E731
    # each alert is an email, then a Slack post: wait for both
    alerts = lambda: min(len(smtp_receiver.messages), len(slack_receiver.posts))  # noqa: E731
    try:
        with postgres_database("lakehouse_alerts_test") as db, airflow_standalone(tmp_path, db, env) as airflow:
            # 1. in time: no alert, and the scheduler has nothing left to fire for it
            airflow.wait("the scheduled run", lambda: set(airflow.run_states("scheduled")) & {"success", "failed"}, 300)
            assert airflow.run_states("scheduled") == ["success"], airflow.tail()
            assert airflow.sql("SELECT count(*) FROM deadline") == [(0,)]
            assert subjects() == [] and slack_receiver.posts == []

            # 2. late, then failed
            api.faults.replace([{"task": "silver", "action": "hang", "times": 1}])
            airflow.airflow("dags", "trigger", DAG_ID, "--logical-date", f"{BATCH}T03:00:00+00:00")
            airflow.wait("the deadline alert", lambda: alerts() >= 1, DEADLINE_SECONDS + 240)
            assert subjects() == [f"[lakehouse][local] DEADLINE MISSED {DAG_ID} {BATCH}"]
            late = email_text(smtp_receiver.messages[0])
            assert "Still running: silver\n" in late and "Not started yet: gold\n" in late
            assert f"({DEADLINE_SECONDS / 3600:g} h after the run was queued at " in late
            assert f"Airflow run: {airflow.env['AIRFLOW__API__BASE_URL']}/dags/{DAG_ID}/runs/manual__" in late
            assert slack_receiver.posts[0]["text"] == f":alarm_clock: {subjects()[0]}"

            runs = requests.get(f"{api.base_url}/api/2.2/jobs/runs/list", headers=headers, timeout=5).json()["runs"]
            [hanging] = [r for r in runs if r["state"]["life_cycle_state"] == "RUNNING"]
            requests.post(
                f"{api.base_url}/api/2.2/jobs/runs/cancel",
                json={"run_id": hanging["run_id"]},
                headers=headers,
                timeout=5,
            ).raise_for_status()
            airflow.wait("the failure alerts", lambda: alerts() >= 3, 240)
            assert airflow.run_states("manual") == ["failed"]

            # 3. the next run (a manual reprocessing of the batch, no logical date) recovers
            api.faults.replace([])
            airflow.airflow("dags", "trigger", DAG_ID, "--conf", f'{{"batch_date": "{BATCH}"}}')
            airflow.wait("the recovery", lambda: airflow.run_states("manual") == ["failed", "success"], 300)
            airflow.wait("the recovery alert", lambda: alerts() >= 4, 120)
            time.sleep(5)  # and nothing more arrives
    finally:
        api.stop()

    assert subjects() == [
        f"[lakehouse][local] DEADLINE MISSED {DAG_ID} {BATCH}",
        f"[lakehouse][local] FAILED silver {BATCH}",
        f"[lakehouse][local] DAG FAILED {DAG_ID} {BATCH}",
        f"[lakehouse][local] RECOVERED {DAG_ID} {BATCH}",
    ]
    assert [p["text"].split(" ", 1)[1] for p in slack_receiver.posts] == subjects()
    summary = email_text(smtp_receiver.messages[2])
    assert "Failed tasks: silver\n" in summary and "Not run because of it: gold\n" in summary
    assert "Airflow log: " in summary and "/tasks/silver?try_number=1" in summary
    recovered = email_text(smtp_receiver.messages[3])
    assert f"Detail: batch {BATCH} succeeded again; it had been failing since " in recovered
    assert "(silver failed)\n" in recovered
