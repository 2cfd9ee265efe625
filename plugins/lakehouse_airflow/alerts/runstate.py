"""What alert callbacks need to know about a DAG run beyond their context, read from Airflow.

Callbacks run in different processes: task callbacks in the worker's task process, DAG callbacks
in the dag-processor, deadline callbacks in the triggerer. All three talk to Airflow through the
Task SDK's supervisor channel (``SUPERVISOR_COMMS``): task states, Variables. ``dag.test()`` runs
DAG callbacks in its own process with no such channel but with the metadata database, so there
the same questions go to the database. Both paths read the same rows.

The *incident register* is one Airflow Variable per failed batch
(``lakehouse_alerts.incident.<dag_id>.<batch>``): opened by a DAG-run failure alert, closed by the
next successful run of that batch, which sends "recovered".
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

INCIDENT_PREFIX = "lakehouse_alerts.incident."

# Task states (as task_states() returns them), grouped the way alerts report them.
FAILED = frozenset({"failed"})
NOT_RUN = frozenset({"none", "upstream_failed", "skipped"})  # not started (yet, or because of a failure)
RUNNING = frozenset({"running", "deferred", "up_for_retry", "up_for_reschedule", "restarting", "queued", "scheduled"})


def tasks_in(states: dict[str, str], wanted: frozenset[str]) -> tuple[str, ...]:
    """The tasks of ``states`` (``{task_id: state}``) whose state is one of ``wanted``."""
    return tuple(task for task, state in states.items() if state in wanted)


def _supervised() -> bool:
    from airflow.sdk.execution_time import task_runner

    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def airflow_run_url(*, dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI (``[api] base_url``, as the task log links use)."""
    from airflow.sdk.configuration import conf

    base_url = conf.get("api", "base_url", fallback="http://localhost:8080/")
    return f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}"


def task_states(*, dag_id: str, run_id: str) -> dict[str, str]:
    """``{task_id: state}`` of one DAG run (state ``"none"`` for a task that never got one)."""
    if _supervised():
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    else:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        query = select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
        )
        with create_session() as session:
            states = {task: state for task, state in session.execute(query)}
    return {task: str(getattr(state, "value", state) or "none") for task, state in states.items()}


def _key(*, dag_id: str, batch: str) -> str:
    return f"{INCIDENT_PREFIX}{dag_id}.{batch}"


def open_incident(*, dag_id: str, batch: str, incident: dict[str, Any]) -> None:
    """Remember that ``batch`` of ``dag_id`` failed (keeps the first failure's ``since`` while it stays open).

    One Variable per batch: runs of different batches (a backfill) never write the same key."""
    previous = get_incident(dag_id=dag_id, batch=batch)
    if previous and previous.get("since"):
        incident = {**incident, "since": previous["since"]}
    value = json.dumps(incident, sort_keys=True)
    if _supervised():
        from airflow.sdk import Variable

        Variable.set(
            _key(dag_id=dag_id, batch=batch), value, description="open lakehouse alert incident (closed by a success)"
        )
    else:
        from airflow.models.variable import Variable as VariableModel

        VariableModel.set(_key(dag_id=dag_id, batch=batch), value)


def get_incident(*, dag_id: str, batch: str) -> dict[str, Any] | None:
    """The open incident of a batch; an unreadable one counts as open (with what is known)."""
    if _supervised():
        from airflow.sdk import Variable

        value = Variable.get(_key(dag_id=dag_id, batch=batch), default=None)
    else:
        from airflow.models.variable import Variable as VariableModel

        value = VariableModel.get(_key(dag_id=dag_id, batch=batch), default_var=None)
    if not value:
        return None
    try:
        incident = json.loads(value)
    except ValueError:
        incident = None
    return incident if isinstance(incident, dict) else {"note": f"unreadable incident record {value!r:.200}"}


def close_incident(*, dag_id: str, batch: str) -> None:
    if _supervised():
        from airflow.sdk import Variable

        Variable.delete(_key(dag_id=dag_id, batch=batch))
    else:
        from airflow.models.variable import Variable as VariableModel

        VariableModel.delete(_key(dag_id=dag_id, batch=batch))
