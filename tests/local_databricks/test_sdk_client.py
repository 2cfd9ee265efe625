"""The local Jobs API driven by ``databricks-sdk``'s ``WorkspaceClient``, the client Databricks users
script with: waiting, outputs, cancellation, pagination, idempotency and the SDK's error classes."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, ResourceDoesNotExist, Unauthenticated
from databricks.sdk.service.jobs import RunLifeCycleState, RunResultState, SparkPythonTask, SubmitTask

from local_databricks.server import LocalJobsApi
from tests.local_databricks.conftest import TOKEN
from tests.local_databricks.test_jobs_api import script

LIST = "/api/2.2/jobs/runs/list"


def client(api: LocalJobsApi, token: str = TOKEN) -> WorkspaceClient:
    return WorkspaceClient(host=api.base_url, token=token, auth_type="pat")


@pytest.fixture
def w(jobs_api: LocalJobsApi) -> WorkspaceClient:
    return client(jobs_api)


def task(key: str, file: str, *params: str) -> SubmitTask:
    return SubmitTask(task_key=key, spark_python_task=SparkPythonTask(python_file=file, parameters=list(params)))


def wait_running(w: WorkspaceClient, run_id: int) -> None:
    deadline = time.monotonic() + 30
    while w.jobs.get_run(run_id).state.life_cycle_state != RunLifeCycleState.RUNNING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"run {run_id} did not start"
        time.sleep(0.1)


def test_submit_and_wait_then_read_the_task_output(w, tmp_path):
    file = script(tmp_path, "ok.py", "import sys\nprint('hello', sys.argv[1:])\n")
    run = w.jobs.submit(run_name="sdk", tasks=[task("only", file, "--run-date", "2024-01-15")]).result(
        timeout=timedelta(seconds=60)
    )
    assert run.state.life_cycle_state == RunLifeCycleState.TERMINATED
    assert run.state.result_state == RunResultState.SUCCESS
    assert w.jobs.get_run(run.run_id).run_name == "sdk"
    [task_run] = run.tasks
    output = w.jobs.get_run_output(task_run.run_id)
    assert output.error is None
    assert "hello ['--run-date', '2024-01-15']" in output.logs
    assert output.metadata.run_id == task_run.run_id


def test_a_parent_runs_output_is_refused_as_databricks_refuses_it(w, tmp_path):
    run = w.jobs.submit(tasks=[task("t", script(tmp_path, "ok.py", "print(1)\n"))]).result()
    with pytest.raises(
        InvalidParameterValue, match="Retrieving the output of runs with multiple tasks is not supported"
    ):
        w.jobs.get_run_output(run.run_id)


def test_a_failed_task_carries_error_and_trace(w, tmp_path):
    file = script(tmp_path, "bad.py", "raise ValueError('header mismatch in cust_info.csv')\n")
    run = w.jobs.submit(tasks=[task("bronze", file)]).result()
    assert run.state.result_state == RunResultState.FAILED
    output = w.jobs.get_run_output(run.tasks[0].run_id)
    assert output.error == "ValueError: header mismatch in cust_info.csv"
    assert output.error_trace.startswith("Traceback (most recent call last)")


def test_cancel_and_wait(w, jobs_api, tmp_path):
    jobs_api.faults.replace([{"task": "stuck", "action": "hang"}])
    run_id = w.jobs.submit(tasks=[task("stuck", script(tmp_path, "ok.py", "print(1)\n"))]).run_id
    wait_running(w, run_id)
    run = w.jobs.cancel_run(run_id).result(timeout=timedelta(seconds=60))
    assert run.state.life_cycle_state == RunLifeCycleState.TERMINATED
    assert run.state.result_state == RunResultState.CANCELED


def test_the_same_idempotency_token_returns_the_same_run(w, tmp_path):
    tasks = [task("t", script(tmp_path, "ok.py", "print(1)\n"))]
    first = w.jobs.submit(tasks=tasks, idempotency_token="dag-run-1/bronze/1").run_id
    assert w.jobs.submit(tasks=tasks, idempotency_token="dag-run-1/bronze/1").run_id == first
    assert w.jobs.submit(tasks=tasks, idempotency_token="dag-run-1/bronze/2").run_id != first


@pytest.fixture
def seven_runs(w, jobs_api, tmp_path) -> tuple[list[int], int]:
    """Six finished runs and, newest, one still running (a hanging task)."""
    ok = script(tmp_path, "ok.py", "print(1)\n")
    done = [w.jobs.submit(run_name=f"r{i}", tasks=[task("t", ok)]).result().run_id for i in range(6)]
    jobs_api.faults.replace([{"task": "stuck", "action": "hang"}])
    running = w.jobs.submit(run_name="running", tasks=[task("stuck", ok)]).run_id
    wait_running(w, running)
    return done, running


def test_list_runs_pages_through_every_run(w, seven_runs):
    done, running = seven_runs
    everything = [r.run_id for r in w.jobs.list_runs(limit=2)]
    assert everything == sorted([*done, running], reverse=True)


def test_list_pages_link_forward_and_back(w, seven_runs):
    done, running = seven_runs
    newest_first = sorted([*done, running], reverse=True)
    first = w.api_client.do("GET", LIST, query={"limit": 3})
    assert [r["run_id"] for r in first["runs"]] == newest_first[:3]
    assert first["has_more"] is True and "prev_page_token" not in first
    second = w.api_client.do("GET", LIST, query={"limit": 3, "page_token": first["next_page_token"]})
    assert [r["run_id"] for r in second["runs"]] == newest_first[3:6]
    back = w.api_client.do("GET", LIST, query={"limit": 3, "page_token": second["prev_page_token"]})
    assert [r["run_id"] for r in back["runs"]] == newest_first[:3]
    last = w.api_client.do("GET", LIST, query={"limit": 3, "page_token": second["next_page_token"]})
    assert [r["run_id"] for r in last["runs"]] == newest_first[6:]
    assert last["has_more"] is False and "next_page_token" not in last


def test_list_runs_filters_active_and_completed(w, seven_runs):
    done, running = seven_runs
    assert [r.run_id for r in w.jobs.list_runs(active_only=True)] == [running]
    assert [r.run_id for r in w.jobs.list_runs(completed_only=True, limit=4)] == sorted(done, reverse=True)
    with pytest.raises(InvalidParameterValue, match="cannot both be true"):
        list(w.jobs.list_runs(active_only=True, completed_only=True))


def test_list_limit_is_at_most_25_and_0_means_25(w, tmp_path):
    ok = script(tmp_path, "ok.py", "print(1)\n")
    for _ in range(27):
        w.jobs.submit(tasks=[task("t", ok)])
    assert len(w.api_client.do("GET", LIST, query={"limit": 0})["runs"]) == 25
    assert len(w.api_client.do("GET", LIST)["runs"]) == 20  # the documented default
    assert len(w.api_client.do("GET", LIST, query={"limit": 25})["runs"]) == 25
    with pytest.raises(InvalidParameterValue, match="limit must be between 0 and 25"):
        w.api_client.do("GET", LIST, query={"limit": 26})
    with pytest.raises(InvalidParameterValue, match="Invalid page_token"):
        w.api_client.do("GET", LIST, query={"page_token": "not-a-token"})


def test_the_sdks_error_classes(w, jobs_api, tmp_path):
    with pytest.raises(ResourceDoesNotExist, match="Run 987654 does not exist"):
        w.jobs.get_run(987654)
    with pytest.raises(ResourceDoesNotExist):
        w.jobs.get_run_output(987654)
    with pytest.raises(ResourceDoesNotExist):
        w.jobs.cancel_run(987654)
    with pytest.raises(InvalidParameterValue):
        w.jobs.submit(tasks=[])
    with pytest.raises(Unauthenticated):
        client(jobs_api, token="wrong").jobs.get_run(1)


def test_a_file_outside_the_repo_runs_by_absolute_path(w, tmp_path: Path):
    """Relative python_file paths resolve against the service's working directory; absolute ones as given."""
    file = script(tmp_path, "abs.py", "print('absolute')\n")
    run = w.jobs.submit(tasks=[task("t", file)]).result()
    assert "absolute" in w.jobs.get_run_output(run.tasks[0].run_id).logs
