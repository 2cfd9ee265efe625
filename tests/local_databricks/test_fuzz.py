"""Fuzz the local Jobs API over real HTTP on loopback (hypothesis): random methods, paths, query
strings, headers and bodies (random JSON, random bytes, and submit bodies close to valid ones).
Every answer is a JSON error or success below 500, within seconds; no file appears outside the
state dir; the service still answers afterwards. Bounded: a fixed number of examples."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_databricks.server import LocalJobsApi
from tests.local_databricks.conftest import TOKEN

ROUTES = [
    "/api/2.2/jobs/runs/submit",
    "/api/2.1/jobs/runs/submit",
    "/api/2.2/jobs/runs/get",
    "/api/2.2/jobs/runs/get-output",
    "/api/2.2/jobs/runs/cancel",
    "/api/2.2/jobs/runs/list",
    "/api/2.1/jobs/runs/list",
    "/local/faults",
    "/runs/1",
    "/runs/../../etc/passwd",
    "/",
]
PARAMS = ["run_id", "limit", "offset", "page_token", "active_only", "completed_only", "run_type", "sig"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
odd_text = st.text(max_size=30) | st.sampled_from(["../../x", "/etc/passwd", "", "a" * 101, "..", "%2e%2e/"])
task_specs = st.fixed_dictionaries(
    {"task_key": odd_text | json_values},
    optional={
        "spark_python_task": st.fixed_dictionaries(
            {"python_file": st.builds(lambda t: f"fuzz/{t}", odd_text) | json_values},
            optional={"parameters": st.lists(st.text(max_size=8), max_size=3) | json_values},
        ),
        "python_wheel_task": st.fixed_dictionaries(
            {
                "package_name": st.builds(lambda t: f"fuzz-{t}", odd_text) | json_values,
                "entry_point": odd_text | json_values,
            },
            optional={"named_parameters": st.dictionaries(st.text(max_size=5), json_values, max_size=2)},
        ),
        "timeout_seconds": json_values,
        "notebook_task": json_values,
    },
)
submit_bodies = st.fixed_dictionaries(
    {"tasks": st.lists(task_specs, max_size=3) | json_values},
    optional={
        "run_name": json_values,
        "idempotency_token": odd_text | json_values,
        "timeout_seconds": json_values,
        "environments": json_values,
    },
)
bodies = (
    st.none()
    | st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | submit_bodies.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.sampled_from(PARAMS), json_values, max_size=3).map(lambda v: json.dumps(v).encode())
)
paths = st.sampled_from(ROUTES) | st.text(max_size=40).map(lambda t: "/" + quote(t, safe="/.%"))
queries = st.dictionaries(st.sampled_from(PARAMS) | st.text(max_size=5), st.text(max_size=20), max_size=3)
header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z").filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection", "expect")
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
auth = st.sampled_from([f"Bearer {TOKEN}", f"Bearer {TOKEN}x", "Bearer", "", "Basic Zm9vOmJhcg=="]) | header_values


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "work").mkdir()
    api = LocalJobsApi(state_dir=root / "state", token=TOKEN, max_concurrent_runs=1, workdir=root / "work").start()
    yield api, root
    api.stop()


def request(api: LocalJobsApi, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type")
    finally:
        conn.close()


def files_outside_state(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(root / "state")}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=paths,
    query=queries,
    body=bodies,
    authorization=auth,
    extra=st.dictionaries(header_names, header_values, max_size=3),
)
def test_random_requests_get_an_answer_below_500(fuzz_api, method, path, query, body, authorization, extra):
    api, _root = fuzz_api
    headers = {**extra, "Authorization": authorization}
    target = path + ("?" + urlencode(query) if query else "")
    status, data, content_type = request(api, method, target, body, headers)
    if path == "/local/faults" and status == 200:
        api.faults.replace([])  # a rule the fuzzer managed to set (an injected 500) must not leak
    assert status < 500, (method, target, body, status, data)
    if content_type == "application/json":
        answer = json.loads(data)
        if status >= 400:
            assert set(answer) == {"error_code", "message"}, answer


def test_after_fuzzing_nothing_was_written_outside_the_state_dir_and_the_service_answers(fuzz_api):
    """Runs after the fuzz test in this module (pytest keeps file order)."""
    api, root = fuzz_api
    assert files_outside_state(root) == set()
    for row in api.store.runs(states="all", limit=100000):
        for task in api.store.tasks(row["run_id"]):
            assert Path(task["log_path"]).resolve().is_relative_to((root / "state").resolve())
    status, data, _ = request(api, "GET", "/api/2.2/jobs/runs/list", None, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "runs" in json.loads(data)
