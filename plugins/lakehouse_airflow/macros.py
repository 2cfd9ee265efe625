"""Template macros of the DAG: the batch date of a run and the Databricks idempotency token."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any


def batch_date(conf: Mapping[str, Any] | None, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The landing batch (``YYYY-MM-DD``) a run processes.

    1. ``batch_date`` in the run's conf when given (manual runs: "reprocess 2024-01-15",
       ``airflow dags trigger ecommerce_lakehouse --conf '{"batch_date": "2024-01-15"}'``). Not a
       DAG ``param``: the Databricks operator forwards every DAG param to a wheel task as a named
       parameter (``--batch_date=...``), which the entry point does not take;
    2. the date of the logical date: a scheduled run's logical date is the start of its interval
       [D 03:00, D+1 03:00), so it processes batch D once the day is complete; a backfill over a
       date range processes each day's batch; ``airflow dags test <dag> 2024-01-15`` processes
       2024-01-15 (``data_interval_start`` would say 2024-01-14 there: a manual run's interval
       is inferred as the one *ending* at its logical date);
    3. a manual run without a logical date (Airflow 3 allows it): the batch of the day it runs.
    """
    explicit = (conf or {}).get("batch_date")
    if explicit:
        return date.fromisoformat(str(explicit)).isoformat()
    if logical_date is not None:
        return logical_date.date().isoformat()
    return (run_after or datetime.now()).date().isoformat()


def batch_label(conf: Mapping[str, Any] | None, logical_date: datetime | None, run_after: datetime | None) -> str:
    """:func:`batch_date` for alerts, which must go out even when the conf is wrong (that is
    often why a run failed): an invalid ``batch_date`` is named instead of raising."""
    try:
        return batch_date(conf, logical_date, run_after)
    except (TypeError, ValueError):
        return f"invalid batch_date {(conf or {}).get('batch_date')!r}"


def idempotency_token(dag_run: Any, task_instance: Any) -> str:
    """Stable for one try of one task of one DAG run; new for the next try.

    A worker that restarts the same try re-submits with the same token, and Databricks returns the
    run already started instead of launching a duplicate (even if the worker died before the run id
    was stored). Every new try (a retry, a clear, a reprocess backfill) has a new ``try_number``,
    hence a new token and a new Databricks run: :class:`lakehouse_airflow.operators.
    LakehouseSubmitRunOperator` resumes only the run of the same try. Hashed: Databricks allows 64
    chars.
    """
    key = f"{dag_run.dag_id}|{task_instance.task_id}|{dag_run.run_id}|{task_instance.try_number}"
    return "lakehouse-" + hashlib.sha256(key.encode()).hexdigest()[:40]
