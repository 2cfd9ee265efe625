"""Alert callbacks: a thin ``BaseNotifier`` that turns an Airflow context into an alert.

Task level: ``on_failure_callback`` runs only after the final try, so one real failure gives one
email and one Slack message; ``on_retry_callback`` posts a quiet Slack note only with
``LAKEHOUSE_ALERT_ON_RETRY=true``.
DAG level: a failed run sends one summary (failed tasks, tasks not run because of them) and opens
an incident for its batch; the next successful run of that batch closes it and sends "recovered"
(``LAKEHOUSE_ALERT_ON_RECOVERY``).

An alert always goes out: when its context lacks something (or holds something invalid, like a
wrong ``batch_date`` in the conf), the alert says so instead of being dropped.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier

from lakehouse_airflow.alerts import runstate
from lakehouse_airflow.alerts.delivery import AlertConfig, config_or_defaults, deliver, with_config_error
from lakehouse_airflow.alerts.messages import AlertFacts, Kind
from lakehouse_airflow.config import alert_config
from lakehouse_airflow.macros import batch_label

log = logging.getLogger(__name__)


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


def _run_duration(dag_run: Any) -> float | None:
    """Seconds since the run started. A run cannot start before it is due (``run_after``), except
    under ``dag.test()``, which sets ``start_date`` to the logical date: no duration there."""
    started, due = getattr(dag_run, "start_date", None), getattr(dag_run, "run_after", None)
    return _seconds_since(started) if started and (due is None or started >= due) else None


def _batch(context: Any, dag_run: Any) -> str:
    return batch_label(getattr(dag_run, "conf", None), context.get("logical_date"), getattr(dag_run, "run_after", None))


def facts_from_context(context: Any, kind: Kind, *, env: str | None = None) -> AlertFacts:
    """A task's alert (``FAILED``, ``RETRY``) from a task callback's context; ``env`` defaults to
    the alert settings' target."""
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
        env=env or alert_config().env,
        dag_id=dag_run.dag_id,
        batch_date=_batch(context, dag_run),
        task_id=ti.task_id,
        try_number=ti.try_number,
        max_tries=(task.retries or 0) + 1,
        duration_seconds=_seconds_since(getattr(ti, "start_date", None)),
        run_page_url=ti.xcom_pull(task_ids=ti.task_id, key="run_page_url"),
        log_url=getattr(ti, "log_url", None),
        airflow_run_url=runstate.airflow_run_url(dag_id=dag_run.dag_id, run_id=dag_run.run_id),
        error=error,
    )


def _ids(context: Any) -> tuple[str, str]:
    """(dag_id, run_id): a DAG callback without a relevant task has only ``dag`` and ``run_id``."""
    dag_run = context.get("dag_run")
    if dag_run is not None:
        return dag_run.dag_id, dag_run.run_id
    return context["dag"].dag_id, context["run_id"]


def dag_run_facts(context: Any, kind: Kind, *, env: str | None = None) -> AlertFacts:
    """A DAG run's alert (``DAG_FAILED`` summary, ``RECOVERED``) from a DAG callback's context.

    The context is the last relevant task's (the one that failed last, or succeeded last); with
    no such task (a deadlocked run) it has only ``dag`` and ``run_id``.
    """
    dag_run = context.get("dag_run")
    dag_id, run_id = _ids(context)
    states = runstate.task_states(dag_id=dag_id, run_id=run_id) if kind is Kind.DAG_FAILED else {}
    failed = runstate.tasks_in(states, runstate.FAILED)
    ti = context.get("ti")
    return AlertFacts(
        kind=kind,
        env=env or alert_config().env,
        dag_id=dag_id,
        batch_date=_batch(context, dag_run) if dag_run is not None else "unknown batch",
        duration_seconds=_run_duration(dag_run),
        failed_tasks=failed,
        skipped_tasks=runstate.tasks_in(states, runstate.NOT_RUN),
        log_url=getattr(ti, "log_url", None) if ti is not None and ti.task_id in failed else None,
        airflow_run_url=runstate.airflow_run_url(dag_id=dag_id, run_id=run_id),
        detail=f"run {run_id} ended: {context.get('reason') or kind.value.lower()}",
    )


def fallback_facts(context: Any, kind: Kind, exc: Exception, *, env: str) -> AlertFacts:
    """What can still be said when the full alert could not be built. ``env`` comes from the
    settings the caller already holds (``config_or_defaults``: the defaults if they are invalid),
    so this reads no settings and cannot fail on them."""
    try:
        dag_id, run_id = _ids(context)
        url: str | None = runstate.airflow_run_url(dag_id=dag_id, run_id=run_id)
    except Exception:
        dag_id, url = "unknown DAG", None
    ti = context.get("ti")
    return AlertFacts(
        kind=kind,
        env=env,
        dag_id=dag_id,
        batch_date="unknown batch",
        task_id=getattr(ti, "task_id", None) if kind in (Kind.FAILED, Kind.RETRY) else None,
        log_url=getattr(ti, "log_url", None),
        airflow_run_url=url,
        detail=f"this alert could not be built in full ({type(exc).__name__}: {exc}): see the Airflow run",
    )


def _recovery(facts: AlertFacts, config: AlertConfig) -> AlertFacts | None:
    """The "recovered" alert if this batch had an open incident (closing it), else None."""
    try:
        incident = runstate.get_incident(dag_id=facts.dag_id, batch=facts.batch_date)
        if incident is None:  # a success after a success: nothing to say
            return None
        runstate.close_incident(dag_id=facts.dag_id, batch=facts.batch_date)
    except Exception:
        log.exception("could not read or close the alert incident of %s %s", facts.dag_id, facts.batch_date)
        return None
    if not config.notify_on_recovery:
        return None
    failed = ", ".join(incident.get("failed_tasks", [])) or "?"
    detail = f"batch {facts.batch_date} succeeded again; it had been failing since {incident.get('since', '?')}"
    return replace(
        facts, detail=f"{detail} ({failed} failed)" + (f"; {incident['note']}" if "note" in incident else "")
    )


def _open_incident(facts: AlertFacts) -> None:
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        runstate.open_incident(
            dag_id=facts.dag_id,
            batch=facts.batch_date,
            incident={"failed_tasks": list(facts.failed_tasks), "since": since},
        )
    except Exception:
        log.exception("could not record the alert incident of %s %s", facts.dag_id, facts.batch_date)


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
        config, config_error = config_or_defaults()
        if self.kind is Kind.RETRY:
            if not config.notify_on_retry:
                return
            config = replace(config, channels=("slack",))
        try:
            if self.kind in (Kind.FAILED, Kind.RETRY):
                facts = facts_from_context(context, self.kind, env=config.env)
            else:
                facts = dag_run_facts(context, self.kind, env=config.env)
        except Exception as exc:
            log.exception("could not build the %s alert in full", self.kind.value)
            facts = fallback_facts(context, self.kind, exc, env=config.env)
        facts = with_config_error(facts, config_error)
        if self.kind is Kind.RECOVERED:
            recovered = _recovery(facts, config)
            if recovered is None:
                return
            facts = recovered
        deliver(facts, config)
        if self.kind is Kind.DAG_FAILED:
            _open_incident(facts)  # after the alert: recording it must not cost the alert
