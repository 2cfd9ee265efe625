"""The DAG's Databricks operator: ``DatabricksSubmitRunOperator`` whose stored run belongs to one try.

The provider's operator (through the Task SDK's ``ResumableJobMixin``) stores the Databricks run id
in the task state store and, on the next execution of the task, reconnects to that run when it is
active and reports its old result when it succeeded. The state store is keyed by DAG run, task and
map index, *not by try*, and Airflow keeps it when a task is cleared; so after a successful day,
``Clear`` in the UI, ``airflow tasks clear`` and ``airflow backfill create --reprocess-behavior
completed`` all ended with "Job already completed successfully, skipping resubmission" and no
Databricks run: a corrected landing file was never reprocessed.

Here the stored value is ``{"run_id": ..., "try_number": ...}`` and only the try that submitted a run
resumes it:

* **same try** (the task process restarts within one try): reconnect to the run it started, or
  report its result if it already finished; the idempotency token (one per try, see
  :func:`lakehouse_airflow.macros.idempotency_token`) also makes a re-submission of that try return
  the same run, which closes the window between "submitted" and "stored";
* **a later try** (a retry, a clear, a reprocess backfill): an earlier try's run that is still active
  (its Airflow task timed out and the cancel failed, or its worker died) is cancelled and waited for
  until it has terminated, so that two runs never write one layer at once; then a new run is
  submitted, reading the landing zone as it is now. A finished earlier run is never reported again.

A later try does not adopt an earlier try's run that is still active, even though that would save
compute after a worker crash: Airflow gives a new try to a retry and to a clear alike, and adopting
a run that started before a clear would report the old input's result for the corrected day.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import JsonValue

# A status the mixin treats as "terminal, not succeeded": it then submits a fresh run.
SUPERSEDED = "SUPERSEDED:"


class EarlierRunStillActiveError(RuntimeError):
    """A Databricks run of an earlier try did not terminate after it was cancelled."""


def stored_run(value: Any) -> tuple[int | None, int | None]:
    """``(run_id, try_number)`` of a stored value: ours is a dict; a bare run id (stored by the
    provider's operator before this one was deployed) has no try, so it counts as an earlier try's."""
    if isinstance(value, dict):
        run_id, try_number = value.get("run_id"), value.get("try_number")
        return (int(run_id) if run_id is not None else None, int(try_number) if try_number is not None else None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    return None, None


class LakehouseSubmitRunOperator(DatabricksSubmitRunOperator):
    """``DatabricksSubmitRunOperator`` that reprocesses on a clear or a reprocess backfill and never
    races an earlier try's run (see the module docstring).

    ``cancel_wait_seconds`` bounds the wait for a cancelled earlier run to terminate; past it the
    try fails (:class:`EarlierRunStillActiveError`) instead of submitting next to it, and the next
    retry tries again.
    """

    def __init__(self, *, cancel_wait_seconds: int = 600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cancel_wait_seconds = cancel_wait_seconds

    def execute(self, context: Context) -> Any:
        store = context.get("task_state_store")
        if store is not None:
            run_id, try_number = stored_run(store.get(self.external_id_key))
            if run_id is not None and try_number != _try_number(context):
                self._retire_earlier_run(run_id, try_number)
        if not self.deferrable:
            return self.execute_resumable(context)  # resumes only this try's run: see get_job_status
        # The provider's deferrable path stores nothing: store this try's run so that the next try
        # finds it (and retires it if it is still active).
        from airflow.providers.databricks.operators.databricks import (
            _handle_deferrable_databricks_operator_execution,
        )

        self.run_id = self._hook.submit_run(self._prepare_submit_json(context))
        if store is not None:
            store.set(self.external_id_key, {"run_id": self.run_id, "try_number": _try_number(context)})
        _handle_deferrable_databricks_operator_execution(self, self._hook, self.log, context)
        return None

    def _retire_earlier_run(self, run_id: int, try_number: int | None) -> None:
        """Cancel an earlier try's run if it is still active and wait until it has terminated."""
        try:
            state = self._hook.get_run_state(run_id)
        except DatabricksApiError as exc:
            if exc.http_status_code != 404:
                raise
            self.log.info(
                "Databricks run %s of try %s no longer exists; this try submits a new run", run_id, try_number
            )
            return
        if state.is_terminal:
            self.log.info(
                "Databricks run %s of try %s has finished (%s); this try submits a new run",
                run_id,
                try_number,
                state.result_state,
            )
            return
        self.log.warning(
            "Databricks run %s of try %s is still %s: cancelling it before this try submits a new run",
            run_id,
            try_number,
            state.life_cycle_state,
        )
        self._hook.cancel_run(run_id)
        deadline = time.monotonic() + self.cancel_wait_seconds
        while not state.is_terminal:
            if time.monotonic() > deadline:
                raise EarlierRunStillActiveError(
                    f"Databricks run {run_id} of try {try_number} is still {state.life_cycle_state} "
                    f"{self.cancel_wait_seconds} s after it was cancelled; not submitting a second run "
                    "next to it. Check it on its run page; the next retry tries again."
                )
            time.sleep(min(self.polling_period_seconds, 5))
            state = self._hook.get_run_state(run_id)
        self.log.info("Databricks run %s of try %s has terminated (%s)", run_id, try_number, state.result_state)

    # ResumableJobMixin hooks: the stored value carries the try that submitted the run.
    # The mixin's contract is any JsonValue; the provider narrowed it to the bare run id.
    def submit_job(self, context: Context) -> JsonValue:  # type: ignore[override]
        run_id = super().submit_job(context)
        return {"run_id": run_id, "try_number": _try_number(context)}

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        run_id, try_number = stored_run(external_id)
        if run_id is None or try_number != _try_number(context):
            return SUPERSEDED  # an earlier try's run (retired in execute): never resumed nor reported
        return super().get_job_status(run_id, context)

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        run_id, _ = stored_run(external_id)
        super().poll_until_complete(run_id, context)

    def get_job_result(self, external_id: JsonValue, context: Context) -> None:
        run_id, _ = stored_run(external_id)
        super().get_job_result(run_id, context)


def _try_number(context: Context) -> int:
    return int(context["ti"].try_number)
