"""DAG-level alerts and the incident register, against the real metadata DB and real receivers.

DAG callbacks get a context from Airflow; here it is built in the shape the dag-processor gives
(``dag_run`` with ``dag_id``, ``run_id``, ``conf``, ``run_after``, ``start_date``; ``logical_date``;
``reason``). Outside Airflow's processes the register reads and writes the metadata DB, as under
``dag.test()``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from lakehouse_airflow.alerts import runstate
from lakehouse_airflow.alerts.messages import Kind
from lakehouse_airflow.alerts.notifier import LakehouseAlertNotifier

DAG = "lakehouse_notifier_test"


def context(batch: str, *, reason: str = "success", dag_id: str = DAG) -> dict:
    now = datetime.now(UTC)
    logical = datetime.fromisoformat(f"{batch}T03:00:00+00:00")
    run = SimpleNamespace(
        dag_id=dag_id, run_id=f"scheduled__{batch}", conf={}, run_after=now - timedelta(minutes=5), start_date=now
    )
    return {"dag_run": run, "logical_date": logical, "reason": reason}


def fail(batch: str, **kw) -> None:
    LakehouseAlertNotifier(Kind.DAG_FAILED).notify(context(batch, reason="task_failure", **kw))


def succeed(batch: str, **kw) -> None:
    LakehouseAlertNotifier(Kind.RECOVERED).notify(context(batch, **kw))


@pytest.fixture
def receivers(airflow_db, alert_connections):
    """Real SMTP and webhook receivers; no open incident before or after."""
    from airflow.models.variable import Variable

    def clear() -> None:
        for batch in ("2024-01-15", "2024-01-16"):
            Variable.delete(runstate._key(dag_id=DAG, batch=batch))

    clear()
    yield alert_connections
    clear()


def subjects(smtp) -> list[str]:
    return [m["Subject"].removeprefix("[lakehouse][local] ") for m in smtp.messages]


def test_a_failed_run_opens_an_incident_that_its_batch_closes_once(receivers):
    smtp, slack = receivers
    fail("2024-01-15")
    fail("2024-01-15")  # the re-run fails too: still one incident, since the first failure
    since = runstate.get_incident(dag_id=DAG, batch="2024-01-15")["since"]
    succeed("2024-01-15")
    succeed("2024-01-15")  # a success after a success says nothing
    assert subjects(smtp) == [
        f"DAG FAILED {DAG} 2024-01-15",
        f"DAG FAILED {DAG} 2024-01-15",
        f"RECOVERED {DAG} 2024-01-15",
    ]
    assert len(slack.posts) == 3
    body = smtp.messages[2].get_payload()[0].get_payload(decode=True).decode()
    assert f"batch 2024-01-15 succeeded again; it had been failing since {since}" in body
    assert runstate.get_incident(dag_id=DAG, batch="2024-01-15") is None


def test_another_batch_succeeding_does_not_close_the_incident(receivers):
    smtp, _slack = receivers
    fail("2024-01-15")
    succeed("2024-01-16")  # the next day works; 2024-01-15 is still missing
    assert subjects(smtp) == [f"DAG FAILED {DAG} 2024-01-15"]
    assert runstate.get_incident(dag_id=DAG, batch="2024-01-15") is not None


def test_recovery_messages_can_be_switched_off(receivers, monkeypatch):
    smtp, _slack = receivers
    monkeypatch.setenv("LAKEHOUSE_ALERT_ON_RECOVERY", "false")
    fail("2024-01-15")
    succeed("2024-01-15")
    assert subjects(smtp) == [f"DAG FAILED {DAG} 2024-01-15"]
    assert runstate.get_incident(dag_id=DAG, batch="2024-01-15") is None  # closed all the same


def test_an_unreadable_incident_record_still_recovers(receivers):
    from airflow.models.variable import Variable

    smtp, _slack = receivers
    Variable.set(runstate._key(dag_id=DAG, batch="2024-01-15"), "{not json")
    succeed("2024-01-15")
    assert subjects(smtp) == [f"RECOVERED {DAG} 2024-01-15"]


def test_a_failure_to_record_the_incident_does_not_cost_the_summary(receivers, caplog):
    """The Variable key is too long for the metadata DB (250 characters): the write fails for real."""
    smtp, _slack = receivers
    long_dag = "d" * 260
    fail("2024-01-15", dag_id=long_dag)
    assert subjects(smtp) == [f"DAG FAILED {long_dag} 2024-01-15"]
    assert "could not record the alert incident" in caplog.text


def test_a_run_summary_has_the_run_duration_but_not_under_dag_test(receivers):
    """A run cannot start before it is due; dag.test() sets start_date to the logical date."""
    from lakehouse_airflow.alerts.notifier import dag_run_facts

    real = context("2024-01-15")
    real["dag_run"].start_date = datetime.now(UTC) - timedelta(seconds=90)
    assert 89 < dag_run_facts(real, Kind.RECOVERED).duration_seconds < 300
    test_run = context("2024-01-15")
    test_run["dag_run"].start_date = test_run["logical_date"]
    assert dag_run_facts(test_run, Kind.RECOVERED).duration_seconds is None


def test_invalid_alert_settings_still_alert_on_the_channels_left_naming_the_setting(receivers, monkeypatch):
    """Recipients separated by ';': no recipient can be trusted, so no email; Slack (its default
    connection) still gets the alert, which says what is wrong with the settings."""
    smtp, slack = receivers
    monkeypatch.setenv("LAKEHOUSE_ALERT_EMAILS", "oncall@example.com;ops@example.com")
    fail("2024-01-15")
    assert smtp.messages == []
    [post] = slack.posts
    assert post["text"] == f":red_circle: [lakehouse][local] DAG FAILED {DAG} 2024-01-15"
    fields = " ".join(f["text"] for block in post["blocks"] for f in block.get("fields", []))
    assert "the alert settings are invalid, sent with the defaults (ConfigError: LAKEHOUSE_ALERT_EMAILS" in fields


def test_an_alert_that_cannot_be_built_nor_configured_still_goes_out(receivers, monkeypatch):
    """The fallback alert reads the settings inside its own ``try``: invalid settings and a context
    without its task instance together still give an alert."""
    _smtp, slack = receivers
    monkeypatch.setenv("LAKEHOUSE_ALERT_EMAILS", "not-an-address")
    LakehouseAlertNotifier(Kind.FAILED).notify({"dag": SimpleNamespace(dag_id=DAG), "run_id": "manual__x"})
    [post] = slack.posts
    assert post["text"] == ":red_circle: [lakehouse][local] FAILED lakehouse_notifier_test unknown batch"
    fields = " ".join(f["text"] for block in post["blocks"] for f in block.get("fields", []))
    assert "this alert could not be built in full (KeyError: 'ti')" in fields
    assert "ConfigError: LAKEHOUSE_ALERT_EMAILS: ['not-an-address'] not an email address" in fields
