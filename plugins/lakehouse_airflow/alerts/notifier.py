"""Task-level alerting: a thin ``BaseNotifier`` that turns an Airflow context into an alert.

``on_failure_callback`` runs only after the final try, so one real failure gives one email and
one Slack message; ``on_retry_callback`` posts a quiet Slack note only with
``LAKEHOUSE_ALERT_ON_RETRY=true``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier

from lakehouse_airflow.alerts.delivery import AlertConfig, deliver
from lakehouse_airflow.alerts.messages import AlertFacts, Kind
from lakehouse_airflow.config import DeploymentConfig
from lakehouse_airflow.macros import batch_date

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


def facts_from_context(context: Any, kind: Kind) -> AlertFacts:
    ti, task, dag_run = context["ti"], context["task"], context["dag_run"]
    started = getattr(ti, "start_date", None)
    duration = (datetime.now(UTC) - started).total_seconds() if started else None
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
        batch_date=batch_date(context.get("params"), context.get("logical_date"), dag_run),
        task_id=ti.task_id,
        try_number=ti.try_number,
        max_tries=(task.retries or 0) + 1,
        duration_seconds=duration,
        run_page_url=ti.xcom_pull(task_ids=ti.task_id, key="run_page_url"),
        log_url=getattr(ti, "log_url", None),
        error=error,
    )


class LakehouseAlertNotifier(BaseNotifier):
    """Email + Slack alert for a task event (``Kind.FAILED`` or ``Kind.RETRY``)."""

    template_fields = ()

    def __init__(self, kind: Kind = Kind.FAILED, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def notify(self, context: Any) -> None:
        config = AlertConfig.from_env()
        if self.kind is Kind.RETRY:
            if not config.notify_on_retry:
                return
            config = replace(config, channels=("slack",))
        try:
            facts = facts_from_context(context, self.kind)
        except Exception:
            log.exception("could not build the %s alert", self.kind.value)
            return
        deliver(facts, config)
