"""The Deadline Alert callback: its message from the triggerer's context, and where it is imported from."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

from lakehouse_airflow.alerts.deadline import deadline_facts, deadline_missed
from lakehouse_airflow.alerts.messages import Kind, slack_message, subject, text_body

# The context Airflow 3.3 hands a deadline callback (Deadline.handle_miss): the DAG run as the REST
# API dumps it (mode="json": datetimes as ISO strings) and the deadline.
CONTEXT = {
    "dag_run": {
        "dag_run_id": "scheduled__2024-01-15T03:00:00+00:00",
        "dag_id": "ecommerce_lakehouse",
        "logical_date": "2024-01-15T03:00:00Z",
        "queued_at": "2024-01-16T03:00:05Z",
        "start_date": "2024-01-16T03:00:07Z",
        "end_date": None,
        "run_after": "2024-01-16T03:00:00Z",
        "run_type": "scheduled",
        "state": "running",
        "conf": {},
    },
    "deadline": {
        "id": "0194f1e2-0000-7000-8000-000000000001",
        "deadline_time": datetime(2024, 1, 16, 7, 0, 5, tzinfo=UTC),
    },
}
STATES = {"bronze": "success", "silver": "running", "gold": "none"}


def run_context(**changes):
    return {**CONTEXT, "dag_run": {**CONTEXT["dag_run"], **changes}}


def test_a_running_run_past_its_deadline_says_what_is_still_running():
    facts = deadline_facts(CONTEXT, task_states=STATES, env="prod")
    assert facts is not None and facts.kind is Kind.DEADLINE
    assert subject(facts) == "[lakehouse][prod] DEADLINE MISSED ecommerce_lakehouse 2024-01-15"
    body = text_body(facts)
    assert "Batch date: 2024-01-15\n" in body
    assert "Still running: silver\n" in body
    assert "Not started yet: gold\n" in body
    assert (
        "Detail: not finished by 2024-01-16 07:00:05 UTC (4 h after the run was queued at 2024-01-16 03:00:05 UTC)"
        in body
    )
    assert "Likely cause: the pipeline is late: a task is slow, queued or stuck" in body
    assert (
        "Airflow run: http://localhost:8080/dags/ecommerce_lakehouse/runs/scheduled__2024-01-15T03%3A00%3A00%2B00%3A00"
        in body
    )
    assert slack_message(facts)["text"].startswith(":alarm_clock: [lakehouse][prod] DEADLINE MISSED")


def test_a_manual_reprocessing_run_names_the_batch_from_its_conf():
    facts = deadline_facts(
        run_context(conf={"batch_date": "2023-12-01"}, logical_date=None), task_states={}, env="prod"
    )
    assert facts is not None and facts.batch_date == "2023-12-01"


def test_the_deadline_time_may_arrive_as_text():
    context = {**CONTEXT, "deadline": {"id": "x", "deadline_time": "2024-01-16T07:00:05+00:00"}}
    facts = deadline_facts(context, task_states=STATES, env="prod")
    assert facts is not None and "not finished by 2024-01-16 07:00:05 UTC" in (facts.detail or "")


def test_a_run_that_finished_late_says_so():
    facts = deadline_facts(run_context(state="success", end_date="2024-01-16T07:12:00Z"), task_states={}, env="prod")
    assert facts is not None and "it finished late, at 2024-01-16 07:12:00 UTC" in (facts.detail or "")


def test_a_run_that_had_already_failed_is_not_reported_again():
    """Its task-failure alert and run summary already went out: one incident, one set of alerts."""
    assert deadline_facts(run_context(state="failed"), task_states={"bronze": "failed"}, env="prod") is None


def test_backfill_runs_have_no_deadline_alert():
    """A backfill queues all its runs at once and runs them one by one: late by construction."""
    assert deadline_facts(run_context(run_type="backfill"), task_states=STATES, env="prod") is None


def test_an_invalid_batch_date_in_the_conf_is_named_not_raised():
    facts = deadline_facts(run_context(conf={"batch_date": "yesterday"}), task_states=STATES, env="prod")
    assert facts is not None and facts.batch_date == "invalid batch_date 'yesterday'"


def test_the_callback_is_awaitable_and_never_raises_without_receivers(caplog):
    """No SMTP/Slack connection configured: the alert goes to the log; task states unavailable
    outside Airflow's processes: the alert still goes out, without them."""
    result = asyncio.run(deadline_missed(context=CONTEXT))
    assert "deadline alert for ecommerce_lakehouse 2024-01-15" in result
    assert "DEADLINE MISSED ecommerce_lakehouse 2024-01-15" in caplog.text


def test_the_triggerer_imports_the_callback_from_the_installed_package(tmp_path):
    """The triggerer has no dags folder on its path: the callback's dotted path must import from
    site-packages alone (here: a fresh interpreter in an empty folder, dags folder unset)."""
    from airflow.sdk import AsyncCallback

    path = AsyncCallback(deadline_missed).path
    assert path == "lakehouse_airflow.alerts.deadline.deadline_missed"
    code = (
        "import inspect, sys\n"
        "from airflow._shared.module_loading import import_string\n"
        f"fn = import_string({path!r})\n"
        "assert inspect.iscoroutinefunction(fn)\n"
        "assert not any('dags' in p.split('/')[-1:] for p in sys.path)\n"
        "print(fn.__module__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AIRFLOW__CORE__DAGS_FOLDER")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("lakehouse_airflow.alerts.deadline")
