"""Contract tests: the provider's DatabricksHook against the local Jobs API over real HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from local_databricks.server import LocalJobsApi
from tests.local_databricks.conftest import TOKEN, connection_uri


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def python_task(key: str, file: str, *params: str) -> dict:
    return {"task_key": key, "spark_python_task": {"python_file": file, "parameters": list(params)}}


def wait_terminal(hook, run_id: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = hook.get_run_state(run_id)
        if state.is_terminal:
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def test_submit_runs_the_task_and_serves_its_log_at_the_run_page(hook, tmp_path):
    file = script(tmp_path, "ok.py", "import sys\nprint('hello from', sys.argv[1:])\n")
    run_id = hook.submit_run({"run_name": "ok", "tasks": [python_task("only", file, "--run-date", "2024-01-15")]})
    state = wait_terminal(hook, run_id)
    assert state.is_successful and state.life_cycle_state == "TERMINATED"
    page_url = hook.get_run_page_url(run_id)
    page = requests.get(page_url, timeout=5)
    assert page.status_code == 200
    assert "hello from [&#x27;--run-date&#x27;, &#x27;2024-01-15&#x27;]" in page.text


def test_failed_task_reports_error_and_trace_in_get_output(hook, tmp_path):
    file = script(tmp_path, "bad.py", "raise ValueError('boom: header mismatch in cust_info.csv')\n")
    run_id = hook.submit_run({"run_name": "bad", "tasks": [python_task("silver", file)]})
    state = wait_terminal(hook, run_id)
    assert state.result_state == "FAILED"
    run = hook.get_run(run_id)
    [task] = run["tasks"]
    assert task["state"]["result_state"] == "FAILED"
    output = hook.get_run_output(task["run_id"])
    assert output["error"] == "ValueError: boom: header mismatch in cust_info.csv"
    assert "Traceback (most recent call last)" in output["error_trace"]


def test_tasks_run_in_order_and_a_failure_skips_the_rest(hook, tmp_path):
    ok = script(tmp_path, "ok.py", "print('ok')\n")
    bad = script(tmp_path, "bad.py", "import sys\nsys.exit('error: nope')\n")
    run_id = hook.submit_run({"tasks": [python_task("a", ok), python_task("b", bad), python_task("c", ok)]})
    wait_terminal(hook, run_id)
    states = {t["task_key"]: t["state"] for t in hook.get_run(run_id)["tasks"]}
    assert states["a"]["result_state"] == "SUCCESS"
    assert states["b"]["result_state"] == "FAILED"
    assert states["c"]["life_cycle_state"] == "SKIPPED"


def test_same_idempotency_token_returns_the_existing_run(hook, tmp_path):
    file = script(tmp_path, "ok.py", "print('once')\n")
    payload = {"run_name": "idem", "idempotency_token": "dag-task-run-1", "tasks": [python_task("t", file)]}
    first = hook.submit_run(payload)
    assert hook.submit_run(payload) == first
    assert hook.submit_run({**payload, "idempotency_token": "dag-task-run-2"}) != first


def test_cancel_stops_a_hanging_run(hook, jobs_api, tmp_path):
    jobs_api.faults.replace([{"task": "stuck", "action": "hang"}])
    run_id = hook.submit_run({"tasks": [python_task("stuck", script(tmp_path, "ok.py", "print(1)\n"))]})
    deadline = time.monotonic() + 30
    while hook.get_run_state(run_id).life_cycle_state != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    hook.cancel_run(run_id)
    assert wait_terminal(hook, run_id).result_state == "CANCELED"


def test_run_timeout_ends_as_timedout(hook, jobs_api, tmp_path):
    jobs_api.faults.replace([{"task": "slow", "action": "hang"}])
    run_id = hook.submit_run({"timeout_seconds": 1, "tasks": [python_task("slow", script(tmp_path, "x.py", ""))]})
    assert wait_terminal(hook, run_id).result_state == "TIMEDOUT"


def test_wrong_token_is_401(jobs_api, monkeypatch):
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_BAD", connection_uri(jobs_api, token="wrong"))
    bad = DatabricksHook(databricks_conn_id="databricks_bad", retry_limit=1)
    with pytest.raises(Exception, match="401"):
        bad.get_run_state(1)


def test_malformed_payload_is_400_with_databricks_error_code(jobs_api):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{jobs_api.base_url}/api/2.2/jobs/runs/submit"
    for body in ({"run_name": "no tasks"}, {"tasks": [{"task_key": "x", "notebook_task": {}}]}):
        response = requests.post(url, json=body, headers=headers, timeout=5)
        assert response.status_code == 400
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    response = requests.post(url, data=b"{not json", headers=headers, timeout=5)
    assert (response.status_code, response.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


def test_hook_retries_429_500_and_dropped_connections(hook, jobs_api, tmp_path):
    run_id = hook.submit_run({"tasks": [python_task("t", script(tmp_path, "ok.py", "print(1)\n"))]})
    jobs_api.faults.replace(
        [
            {"path": "/api/2.2/jobs/runs/get", "action": "status", "status": 429, "times": 1},
            {"path": "/api/2.2/jobs/runs/get", "action": "status", "status": 500, "times": 1},
            {"path": "/api/2.2/jobs/runs/get", "action": "drop", "times": 1},
        ]
    )
    assert wait_terminal(hook, run_id).is_successful
    assert [r["times"] for r in jobs_api.faults.rules] == [0, 0, 0]  # each fault was hit, and retried past


def test_get_parameters_may_come_as_a_json_body(jobs_api, hook, tmp_path):
    """The provider's deferrable trigger sends GET parameters as a JSON body."""
    run_id = hook.submit_run({"tasks": [python_task("t", script(tmp_path, "ok.py", "print(1)\n"))]})
    response = requests.get(
        f"{jobs_api.base_url}/api/2.1/jobs/runs/get",
        json={"run_id": run_id},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200 and response.json()["run_id"] == run_id


def test_list_runs(hook, tmp_path):
    file = script(tmp_path, "ok.py", "print(1)\n")
    ids = [hook.submit_run({"run_name": f"r{i}", "tasks": [python_task("t", file)]}) for i in range(3)]
    for run_id in ids:
        wait_terminal(hook, run_id)
    listed = hook._do_api_call(("GET", "2.2/jobs/runs/list"), {"limit": 2})
    assert [r["run_id"] for r in listed["runs"]] == sorted(ids, reverse=True)[:2]
    assert listed["has_more"] is True


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "state"
    api = LocalJobsApi(state_dir=state, token=TOKEN).start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ok = script(tmp_path, "ok.py", "print(1)\n")
    done = requests.post(
        f"{api.base_url}/api/2.2/jobs/runs/submit", json={"tasks": [python_task("t", ok)]}, headers=headers, timeout=5
    ).json()["run_id"]
    time.sleep(0.5)
    while (
        requests.get(f"{api.base_url}/api/2.2/jobs/runs/get?run_id={done}", headers=headers, timeout=5).json()["state"][
            "life_cycle_state"
        ]
        != "TERMINATED"
    ):
        time.sleep(0.1)
    api.faults.replace([{"task": "stuck", "action": "hang"}])
    running = requests.post(
        f"{api.base_url}/api/2.2/jobs/runs/submit",
        json={"tasks": [python_task("stuck", ok)]},
        headers=headers,
        timeout=5,
    ).json()["run_id"]
    time.sleep(1)
    api.stop()

    again = LocalJobsApi(state_dir=state, token=TOKEN).start()

    def get(run_id: int) -> dict:
        url = f"{again.base_url}/api/2.2/jobs/runs/get?run_id={run_id}"
        return requests.get(url, headers=headers, timeout=5).json()

    try:
        assert get(done)["state"] == {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS", "state_message": ""}
        lost = get(running)["state"]
        assert lost["life_cycle_state"] == "INTERNAL_ERROR"
        assert "restarted" in lost["state_message"]
    finally:
        again.stop()


def test_run_pages_can_be_linked_at_a_public_url(tmp_path):
    """Behind a port mapping (docker compose) the browser reaches the service at another address."""
    api = LocalJobsApi(state_dir=tmp_path / "state", token=TOKEN, public_url="http://localhost:18765/").start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        run_id = requests.post(
            f"{api.base_url}/api/2.2/jobs/runs/submit",
            json={"tasks": [python_task("t", script(tmp_path, "ok.py", "print(1)\n"))]},
            headers=headers,
            timeout=5,
        ).json()["run_id"]
        run = requests.get(f"{api.base_url}/api/2.2/jobs/runs/get?run_id={run_id}", headers=headers, timeout=5).json()
        assert run["run_page_url"] == f"http://localhost:18765/runs/{run_id}?sig={api.run_page_signature(run_id)}"
        assert run["tasks"][0]["run_page_url"] == f"{run['run_page_url']}#task-t"
    finally:
        api.stop()
