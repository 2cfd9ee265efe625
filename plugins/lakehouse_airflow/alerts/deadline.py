"""The DAG's Deadline Alert callback: "gold not done N hours after the run was queued".

Airflow 3 replaced SLAs with Deadline Alerts: the scheduler notices the missed deadline and the
triggerer awaits :func:`deadline_missed`. The triggerer imports it by its dotted path and does not
have the dags folder on its path, so it lives here, in the installed ``lakehouse_airflow``
package. Its context is not a task's: ``{"dag_run": <the DAG run as the REST API shows it>,
"deadline": {"id": ..., "deadline_time": ...}}``.

A run that already *failed* before its deadline is not reported again: its failure alerts said it.
Backfill runs are not reported either: they are all queued at once and run one after another.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from lakehouse_airflow.alerts import runstate
from lakehouse_airflow.alerts.delivery import config_or_defaults, deliver, with_config_error
from lakehouse_airflow.alerts.messages import AlertFacts, Kind
from lakehouse_airflow.macros import batch_label

log = logging.getLogger(__name__)


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "?"


def deadline_facts(context: dict[str, Any], *, task_states: dict[str, str], env: str) -> AlertFacts | None:
    """The alert for a missed deadline, or None for a run that had already failed (alerted then)
    and for a backfill run."""
    run = context["dag_run"]
    state = str(run.get("state"))
    deadline_time = _when(context.get("deadline", {}).get("deadline_time"))
    queued_at = _when(run.get("queued_at"))
    if state == "failed":
        log.info("deadline of %s passed after the run had failed: its failure alerts went out", run.get("dag_run_id"))
        return None
    if run.get("run_type") == "backfill":
        # A backfill queues all its runs at once and runs them one by one: the later ones are
        # "late" by construction. Nobody waits for them at a deadline; failures still alert.
        log.info("deadline of backfill run %s passed: not alerted", run.get("dag_run_id"))
        return None
    detail = f"not finished by {_fmt(deadline_time)}"
    if deadline_time and queued_at:
        hours = (deadline_time - queued_at).total_seconds() / 3600
        detail += f" ({hours:g} h after the run was queued at {_fmt(queued_at)})"
    end_date = _when(run.get("end_date"))
    if state == "success" and end_date:
        detail += f"; it finished late, at {_fmt(end_date)}"
    run_after = _when(run.get("run_after"))
    waiting = ", ".join(runstate.tasks_in(task_states, runstate.NOT_RUN))
    return AlertFacts(
        kind=Kind.DEADLINE,
        env=env,
        dag_id=run["dag_id"],
        batch_date=batch_label(run.get("conf"), _when(run.get("logical_date")), run_after),
        running_tasks=runstate.tasks_in(task_states, runstate.RUNNING),
        failed_tasks=runstate.tasks_in(task_states, runstate.FAILED),
        airflow_run_url=runstate.airflow_run_url(dag_id=run["dag_id"], run_id=run["dag_run_id"]),
        detail=detail,
        extra={"Run state": state, **({"Not started yet": waiting} if waiting else {})},
    )


def _handle_miss(context: dict[str, Any]) -> str:
    run = context["dag_run"]
    try:
        states = runstate.task_states(dag_id=run["dag_id"], run_id=run["dag_run_id"])
    except Exception as exc:  # the alert matters more than the detail
        log.warning("could not read the task states of %s: %s", run.get("dag_run_id"), exc)
        states = {}
    config, config_error = config_or_defaults()
    facts = deadline_facts(context, task_states=states, env=config.env)
    if facts is None:
        return "not sent: the run had already failed, or is a backfill run"
    sent = deliver(with_config_error(facts, config_error), config)
    return f"deadline alert for {facts.dag_id} {facts.batch_date}: {sent}"


async def deadline_missed(context: dict[str, Any], **kwargs: Any) -> str:
    """``AsyncCallback`` target. The hooks and the Task SDK calls are blocking: run them in a
    thread so that the triggerer's event loop keeps serving the other triggers."""
    return await asyncio.to_thread(_handle_miss, context)
