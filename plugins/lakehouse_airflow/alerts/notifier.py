"""Alert callbacks: a thin ``BaseNotifier`` that turns an Airflow context into an alert.

Task level: ``on_failure_callback`` runs only after the final try, so one real failure gives one
email and one Slack message; ``on_retry_callback`` posts a quiet Slack note only with
``LAKEHOUSE_ALERT_ON_RETRY=true``.
DAG level: a failed run sends one summary (failed tasks, tasks not run because of them) and opens
an incident; the next successful run closes it and sends "recovered" (``LAKEHOUSE_ALERT_ON_RECOVERY``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier

from lakehouse_airflow.alerts import runstate
from lakehouse_airflow.alerts.delivery import AlertConfig, deliver
from lakehouse_airflow.alerts.messages import AlertFacts, Kind
from lakehouse_airflow.config import DeploymentConfig
from lakehouse_airflow.macros import batch_date

log = logging.getLogger(__name__)

FAILED_STATES = {"failed"}
NOT_RUN_STATES = {"upstream_failed", "skipped", "none"}


def databricks_error(conn_id: str, run_id: int | None) -> str | None:
    """The error and first trace lines of the failed task(s) of a Databricks run (``get-output``)."""
    if not run_id:
        return None
    try:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        hook = DatabricksHook(databricks_conn_id=conn_id, retry_limit=2, retry_delay=1)
        run = hook.get_run(run_id)
        errors = []
        for task in run.get("tasks", []):
            if task.get("state", {}).get("result_state") in ("FAILED", "TIMEDOUT"):
                output = hook.get_run_output(task["run_id"])
                errors.append("\n".join(filter(None, [output.get("error"), output.get("error_trace")])))
        return "\n".join(errors) or run.get("state", {}).get("state_message") or None
    except Exception as exc:
        log.warning("could not fetch the Databricks error of run %s: %s", run_id, exc)
        return None


def _seconds_since(started: datetime | None) -> float | None:
    return (datetime.now(UTC) - started).total_seconds() if started else None


def facts_from_context(context: Any, kind: Kind) -> AlertFacts:
    """A task's alert (``FAILED``, ``RETRY``) from a task callback's context."""
    ti, task, dag_run = context["ti"], context["task"], context["dag_run"]
    run_id = ti.xcom_pull(task_ids=ti.task_id, key="run_id")
    exception = context.get("exception")
    error = databricks_error(getattr(task, "databricks_conn_id", "databricks_default"), run_id)
    if exception is not None:
        error = (
            f"{error}\n{type(exception).__name__}: {exception}" if error else f"{type(exception).__name__}: {exception}"
        )
    return AlertFacts(
        kind=kind,
        env=DeploymentConfig.from_env().env,
        dag_id=dag_run.dag_id,
        batch_date=batch_date(dag_run.conf, context.get("logical_date"), dag_run.run_after),
        task_id=ti.task_id,
        try_number=ti.try_number,
        max_tries=(task.retries or 0) + 1,
        duration_seconds=_seconds_since(getattr(ti, "start_date", None)),
        run_page_url=ti.xcom_pull(task_ids=ti.task_id, key="run_page_url"),
        log_url=getattr(ti, "log_url", None),
        airflow_run_url=runstate.airflow_run_url(dag_run.dag_id, dag_run.run_id),
        error=error,
    )


def dag_run_facts(context: Any, kind: Kind) -> AlertFacts:
    """A DAG run's alert (``DAG_FAILED`` summary, ``RECOVERED``) from a DAG callback's context.

    The context is the last relevant task's (the one that failed last, or succeeded last); with
    no such task (a deadlocked run) it has only ``dag`` and ``run_id``.
    """
    dag_run = context.get("dag_run")
    dag_id = dag_run.dag_id if dag_run is not None else context["dag"].dag_id
    run_id = dag_run.run_id if dag_run is not None else context["run_id"]
    states = runstate.task_states(dag_id, run_id)
    failed = tuple(t for t, s in states.items() if s in FAILED_STATES)
    ti = context.get("ti")
    return AlertFacts(
        kind=kind,
        env=DeploymentConfig.from_env().env,
        dag_id=dag_id,
        batch_date=batch_date(dag_run.conf, context.get("logical_date"), dag_run.run_after)
        if dag_run is not None
        else "unknown batch",
        # a run that was never queued is a dag.test() run, whose start_date is its logical date
        duration_seconds=_seconds_since(dag_run.start_date) if getattr(dag_run, "queued_at", None) else None,
        failed_tasks=failed if kind is Kind.DAG_FAILED else (),
        skipped_tasks=tuple(t for t, s in states.items() if s in NOT_RUN_STATES) if kind is Kind.DAG_FAILED else (),
        log_url=getattr(ti, "log_url", None) if ti is not None and ti.task_id in failed else None,
        airflow_run_url=runstate.airflow_run_url(dag_id, run_id),
        detail=f"run {run_id} ended: {context.get('reason') or kind.value.lower()}",
    )


def _with_recovery(facts: AlertFacts, incident: dict[str, Any]) -> AlertFacts:
    failing = f"failing since {incident.get('since', '?')}: {', '.join(incident.get('failed_tasks', [])) or '?'}"
    failing += f" failed for batch {incident.get('batch_date', '?')}"
    if incident.get("batch_date") != facts.batch_date:
        failing += f" (batch {incident.get('batch_date')} has not succeeded since: re-run it)"
    return replace(facts, detail=f"{facts.dag_id} succeeded for batch {facts.batch_date}; it was {failing}")


class LakehouseAlertNotifier(BaseNotifier):
    """Email + Slack alert for a task event (``FAILED``, ``RETRY``) or a DAG-run event
    (``DAG_FAILED``, ``RECOVERED``: use the latter as the DAG's ``on_success_callback``)."""

    template_fields = ()

    def __init__(self, kind: Kind = Kind.FAILED, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to template. (Under ``dag.test()`` the ``dag`` of a DAG callback's context is a
        ``SerializedDAG`` with no ``get_template_env``, which the base class would call.)"""

    def notify(self, context: Any) -> None:
        config = AlertConfig.from_env()
        try:
            facts = self._facts(context, config)
        except Exception:
            log.exception("could not build the %s alert", self.kind.value)
            return
        if facts is None:
            return
        if self.kind is Kind.RETRY:
            config = replace(config, channels=("slack",))
        deliver(facts, config)

    def _facts(self, context: Any, config: AlertConfig) -> AlertFacts | None:
        if self.kind is Kind.RETRY and not config.notify_on_retry:
            return None
        if self.kind in (Kind.FAILED, Kind.RETRY):
            return facts_from_context(context, self.kind)
        facts = dag_run_facts(context, self.kind)
        if self.kind is Kind.DAG_FAILED:
            since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            runstate.open_incident(
                facts.dag_id,
                {"batch_date": facts.batch_date, "failed_tasks": list(facts.failed_tasks), "since": since},
            )
            return facts
        open_incident = runstate.get_incident(facts.dag_id)
        if open_incident is None:  # a success after a success: nothing to say
            return None
        runstate.close_incident(facts.dag_id)
        return _with_recovery(facts, open_incident) if config.notify_on_recovery else None
