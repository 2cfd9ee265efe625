"""The local Jobs API refuses what Databricks refuses and survives what a careless or hostile client
sends: validated task keys, capped bodies, 400 for bad input, no stuck transactions, no token in
the job processes, run pages behind the token or a per-run signature."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests

from local_databricks.server import LocalJobsApi
from tests.local_databricks.conftest import TOKEN
from tests.local_databricks.test_jobs_api import python_task, script, wait_terminal

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def submit_url(api: LocalJobsApi) -> str:
    return f"{api.base_url}/api/2.2/jobs/runs/submit"


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "key", ["../escape", "/tmp/abs", "a/b", "", "x" * 101, "spaces here", "dot.key", "ünï", 7, None]
)
def test_task_key_must_be_1_to_100_of_letters_digits_dash_underscore(jobs_api, tmp_path, key):
    ok = script(tmp_path, "ok.py", "print(1)\n")
    before = files_under(tmp_path)
    body = {"tasks": [{**python_task("k", ok), "task_key": key}]}
    response = requests.post(submit_url(jobs_api), json=body, headers=HEADERS, timeout=5)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "task_key" in response.json()["message"]
    assert files_under(tmp_path) - before <= files_under(tmp_path / "state")


def test_valid_task_keys_run_and_their_logs_stay_in_the_state_dir(hook, jobs_api, tmp_path):
    ok = script(tmp_path, "ok.py", "print('fine')\n")
    key = "A-z_0" + "9" * 95
    run_id = hook.submit_run({"tasks": [python_task(key, ok)]})
    assert wait_terminal(hook, run_id).is_successful
    [task] = hook.get_run(run_id)["tasks"]
    assert "fine" in hook.get_run_output(task["run_id"])["logs"]
    assert all(p.is_relative_to(tmp_path / "state") for p in files_under(tmp_path) if p.suffix == ".log")


def test_a_body_over_10_mb_is_413_with_a_databricks_error(jobs_api):
    body = b'{"run_name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = requests.post(submit_url(jobs_api), data=body, headers=HEADERS, timeout=30)
    assert response.status_code == 413
    assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "10485760" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b"\xff\xfe",
        b'{"tasks": "bronze"}',
        b'{"tasks": [42]}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": 5}}]}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py", "parameters": [1]}}]}',
        b'{"tasks": [{"task_key": "t", "python_wheel_task": {"package_name": "p"}}]}',
        b'{"tasks": [{"task_key": "t", "python_wheel_task": {"package_name": "p", "entry_point": "e", "named_parameters": []}}]}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py"}}], "timeout_seconds": "soon"}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py"}}], "timeout_seconds": -1}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py"}}], "run_name": ["a"]}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py"}}], "idempotency_token": 5}',
        b'{"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py", "source": "SPACE"}}]}',
    ],
)
def test_malformed_json_wrong_types_and_unknown_values_are_400(jobs_api, body):
    response = requests.post(submit_url(jobs_api), data=body, headers=HEADERS, timeout=5)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(
    "query",
    ["run_id=abc", "run_id=99999999999999999999999", "run_id=", "run_id=1.5"],
)
def test_bad_get_parameters_are_400(jobs_api, query):
    response = requests.get(f"{jobs_api.base_url}/api/2.2/jobs/runs/get?{query}", headers=HEADERS, timeout=5)
    assert (response.status_code, response.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


def test_a_bad_content_length_is_answered_not_dropped(jobs_api):
    for length in ("abc", "-5"):
        with socket.create_connection(("127.0.0.1", jobs_api.port), timeout=10) as sock:
            sock.sendall(
                f"POST /api/2.2/jobs/runs/submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: {length}\r\n\r\n".encode()
            )
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 400"), answer


def test_unknown_methods_are_405_not_501(jobs_api):
    for method in ("DELETE", "PATCH"):
        response = requests.request(method, submit_url(jobs_api), headers=HEADERS, timeout=5)
        assert response.status_code == 405
        assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_an_empty_idempotency_token_twice_leaves_the_store_working(jobs_api, tmp_path):
    ok = script(tmp_path, "ok.py", "print(1)\n")
    body = {"idempotency_token": "", "tasks": [python_task("t", ok)]}
    for _ in range(2):
        assert requests.post(submit_url(jobs_api), json=body, headers=HEADERS, timeout=5).status_code == 200
    after = requests.post(submit_url(jobs_api), json={"tasks": [python_task("t", ok)]}, headers=HEADERS, timeout=5)
    assert after.status_code == 200 and "run_id" in after.json()


def test_job_processes_do_not_get_the_api_token(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_DATABRICKS_TOKEN", "secret-token-123")
    monkeypatch.setenv("MY_COPY_OF_IT", "secret-token-123")
    api = LocalJobsApi(state_dir=tmp_path / "state", token="secret-token-123").start()
    headers = {"Authorization": "Bearer secret-token-123"}
    try:
        file = script(
            tmp_path, "env.py", "import os\nprint(sorted(k for k, v in os.environ.items() if 'secret-token' in v))\n"
        )
        run_id = requests.post(
            submit_url(api), json={"tasks": [python_task("t", file)]}, headers=headers, timeout=5
        ).json()["run_id"]
        deadline = time.monotonic() + 30
        while True:
            run = requests.get(
                f"{api.base_url}/api/2.2/jobs/runs/get?run_id={run_id}", headers=headers, timeout=5
            ).json()
            if run["state"]["life_cycle_state"] == "TERMINATED" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        output = requests.get(
            f"{api.base_url}/api/2.2/jobs/runs/get-output?run_id={run['tasks'][0]['run_id']}",
            headers=headers,
            timeout=5,
        ).json()
        assert "[]" in output["logs"]
    finally:
        api.stop()


def test_run_pages_need_the_token_or_the_runs_signature(hook, jobs_api, tmp_path):
    file = script(tmp_path, "ok.py", "print('visible log line')\n")
    run_id = hook.submit_run({"tasks": [python_task("t", file)]})
    wait_terminal(hook, run_id)
    signed = hook.get_run_page_url(run_id)
    assert "visible log line" in requests.get(signed, timeout=5).text  # what the Airflow UI link opens
    bare = f"{jobs_api.base_url}/runs/{run_id}"
    assert requests.get(bare, timeout=5).status_code == 401
    assert requests.get(bare, headers=HEADERS, timeout=5).status_code == 200
    other = hook.submit_run({"tasks": [python_task("t", file)]})
    forged = signed.replace(f"/runs/{run_id}?", f"/runs/{other}?")
    assert requests.get(forged, timeout=5).status_code == 401
    [task] = hook.get_run(run_id)["tasks"]
    assert requests.get(task["run_page_url"], timeout=5).status_code == 200
