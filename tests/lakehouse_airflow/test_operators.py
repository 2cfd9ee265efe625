"""LakehouseSubmitRunOperator against the real local Jobs API: only the try that submitted a run
resumes it; a new try never reports an old run and never submits next to one still active.

Each call of ``execute`` is one Airflow task process; the context carries its try number and a
task state store shared by all tries of the task (as Airflow's is: keyed by DAG run, task and map
index, not by try). Scheduler-level scenarios: tests/dags/test_backfill_scheduler.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.dags.standalone import local_jobs_api

TOKEN = "operator-token"


@dataclass
class StateStore:
    """The interface of Airflow's ``context["task_state_store"]`` (get / set / delete)."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@dataclass
class TaskInstance:
    try_number: int
    stats_tags: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def api(tmp_path, monkeypatch):
    api = local_jobs_api(tmp_path, TOKEN)
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", f"databricks://:{TOKEN}@127.0.0.1:{api.port}/http")
    yield api
    api.stop()


def operator(script: Path, try_number: int) -> Any:
    from lakehouse_airflow.operators import LakehouseSubmitRunOperator

    return LakehouseSubmitRunOperator(
        task_id="bronze",
        json={
            "run_name": "lakehouse-test-bronze-2024-01-15",
            "tasks": [{"task_key": "bronze", "spark_python_task": {"python_file": str(script)}}],
            # one token per try, as lakehouse_airflow.macros.idempotency_token makes
            "idempotency_token": f"token-try-{try_number}",
        },
        polling_period_seconds=1,
        databricks_retry_delay=1,
        do_xcom_push=False,
    )


def execute(script: Path, store: StateStore, try_number: int) -> None:
    context = {"ti": TaskInstance(try_number), "task_state_store": store}
    operator(script, try_number).execute(context)  # type: ignore[arg-type]


def runs(api) -> list[dict[str, Any]]:
    got = requests.get(
        f"{api.base_url}/api/2.2/jobs/runs/list", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).json()
    return sorted(got.get("runs", []), key=lambda r: r["run_id"])


def in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "job.py"
    path.write_text("print('done')\n")
    return path


def test_a_new_try_submits_a_new_run_where_the_same_try_reports_its_own(api, script):
    store = StateStore()
    execute(script, store, try_number=1)
    assert [r["state"]["result_state"] for r in runs(api)] == ["SUCCESS"]
    execute(script, store, try_number=1)  # the task process of try 1 restarts after its run finished
    assert len(runs(api)) == 1
    execute(script, store, try_number=2)  # a clear (or a reprocess backfill, or a retry): a new try
    assert [r["state"]["result_state"] for r in runs(api)] == ["SUCCESS", "SUCCESS"]
    assert store.get("databricks_run_id") == {"run_id": runs(api)[-1]["run_id"], "try_number": 2}


def test_a_run_id_stored_by_the_provider_operator_is_not_reported_again(api, script):
    """State written before this operator was deployed: a bare run id, no try."""
    store = StateStore()
    execute(script, store, try_number=1)
    store.set("databricks_run_id", runs(api)[0]["run_id"])
    execute(script, store, try_number=2)  # the stock operator said "already completed successfully"
    assert [r["state"]["result_state"] for r in runs(api)] == ["SUCCESS", "SUCCESS"]


def test_a_stored_run_that_no_longer_exists_is_forgotten(api, script):
    """Databricks keeps run history for a limited time: an expired run answers 404."""
    store = StateStore({"databricks_run_id": {"run_id": 4242, "try_number": 1}})
    execute(script, store, try_number=2)
    assert [r["state"]["result_state"] for r in runs(api)] == ["SUCCESS"]


def test_a_restart_within_a_try_reconnects_to_its_active_run(api, script):
    api.faults.replace([{"task": "bronze", "action": "hang", "times": 1}])
    store = StateStore()
    first, first_errors = in_thread(execute, script, store, 1)
    wait_for(lambda: [r["state"]["life_cycle_state"] for r in runs(api)] == ["RUNNING"])
    wait_for(lambda: store.get("databricks_run_id") is not None)
    restarted, restarted_errors = in_thread(execute, script, store, 1)  # same try, new process
    time.sleep(3)
    assert restarted.is_alive() and len(runs(api)) == 1  # polling the run try 1 started: no duplicate
    api.runner.cancel(runs(api)[0]["run_id"])
    first.join(30)
    restarted.join(30)
    assert first_errors and restarted_errors  # both were waiting on that run, which was cancelled
    assert len(runs(api)) == 1


def test_a_new_try_cancels_and_waits_for_an_earlier_try_run_still_active(api, script):
    """The earlier try's process lost track of its run (its worker died, or the cancel on
    execution_timeout failed) and the run goes on: the next try must not write next to it."""
    api.faults.replace([{"task": "bronze", "action": "hang", "times": 1}])
    store = StateStore()
    in_thread(execute, script, store, 1)
    wait_for(
        lambda: store.get("databricks_run_id") is not None and runs(api)[0]["state"]["life_cycle_state"] == "RUNNING"
    )
    execute(script, store, try_number=2)
    earlier, retried = runs(api)
    assert earlier["state"]["result_state"] == "CANCELED" and retried["state"]["result_state"] == "SUCCESS"
    assert earlier["end_time"] <= retried["start_time"]


def test_a_new_try_fails_rather_than_submit_next_to_a_run_it_cannot_cancel(api, script):
    api.faults.replace(
        [
            {"task": "bronze", "action": "hang", "times": 1},
            {"path": "/api/2.2/jobs/runs/cancel", "action": "status", "status": 400, "times": -1},
            {"path": "/api/2.1/jobs/runs/cancel", "action": "status", "status": 400, "times": -1},
        ]
    )
    store = StateStore()
    in_thread(execute, script, store, 1)
    wait_for(
        lambda: store.get("databricks_run_id") is not None and runs(api)[0]["state"]["life_cycle_state"] == "RUNNING"
    )
    with pytest.raises(Exception, match="400"):
        execute(script, store, try_number=2)
    assert [r["state"]["life_cycle_state"] for r in runs(api)] == ["RUNNING"]  # nothing submitted next to it
    api.faults.replace([])
    api.runner.cancel(runs(api)[0]["run_id"])


def test_a_new_try_fails_rather_than_submit_next_to_a_run_that_does_not_stop(api, script):
    """Databricks cancels asynchronously: a run still active long after its cancel blocks the new try."""
    from lakehouse_airflow.operators import EarlierRunStillActiveError

    api.faults.replace(
        [
            {"task": "bronze", "action": "hang", "times": 1},
            # the cancel is accepted (200 {}) but the run goes on
            {"path": "/api/2.2/jobs/runs/cancel", "action": "accept", "times": -1},
            {"path": "/api/2.1/jobs/runs/cancel", "action": "accept", "times": -1},
        ]
    )
    store = StateStore()
    in_thread(execute, script, store, 1)
    wait_for(
        lambda: store.get("databricks_run_id") is not None and runs(api)[0]["state"]["life_cycle_state"] == "RUNNING"
    )
    retry = operator(script, 2)
    retry.cancel_wait_seconds = 2
    with pytest.raises(EarlierRunStillActiveError, match="still RUNNING 2 s after it was cancelled"):
        retry.execute({"ti": TaskInstance(2), "task_state_store": store})  # type: ignore[arg-type]
    assert [r["state"]["life_cycle_state"] for r in runs(api)] == ["RUNNING"]
    api.faults.replace([])
    api.runner.cancel(runs(api)[0]["run_id"])
