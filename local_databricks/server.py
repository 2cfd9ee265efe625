"""HTTP server: the subset of the Databricks Jobs API that ``DatabricksHook`` uses for submitted runs.

Endpoints (``/api/2.1/...`` and ``/api/2.2/...``): ``POST jobs/runs/submit``, ``GET jobs/runs/get``,
``GET jobs/runs/get-output``, ``POST jobs/runs/cancel``, ``GET jobs/runs/list``. GET parameters come
from the query string or, as the provider's deferrable trigger sends them, from a JSON body.
``GET /runs/<run_id>`` is the run page (state and task logs); it needs the bearer token or the
run's signature (``?sig=``, in ``run_page_url``). ``PUT /local/faults`` sets fault rules (see
``faults.py``). Every API call needs ``Authorization: Bearer <token>``. Request validation is in
``validation.py``; bodies are capped at ``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local_databricks import page_token, validation
from local_databricks.errors import ApiError
from local_databricks.faults import FaultRules
from local_databricks.runner import Runner, TaskSpecError, task_command
from local_databricks.store import ACTIVE, RunStore

log = logging.getLogger("local_databricks")
DEFAULT_TOKEN = "local-dev-token"
MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 20, 25  # runs/list, as Databricks documents
RUN_TYPES = frozenset({"JOB_RUN", "WORKFLOW_RUN", "SUBMIT_RUN"})
_API = re.compile(r"^/api/2\.[12]/jobs/runs/(submit|get|get-output|cancel|list)$")


class LocalJobsApi:
    """The service: store + runner + HTTP server. ``start()`` serves on a background thread."""

    def __init__(
        self,
        *,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        max_concurrent_runs: int = 4,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        public_url: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.public_url = public_url  # where a browser reaches the run pages (e.g. behind a port mapping)
        self.token = token
        self.store = RunStore(state_dir / "runs.sqlite")
        self.faults = FaultRules()
        self.runner = Runner(
            self.store,
            self.faults,
            max_concurrent_runs=max_concurrent_runs,
            workdir=workdir or Path.cwd(),
            env=env,
            secrets=(token,),
        )
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._recover()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def page_url(self) -> str:
        return (self.public_url or self.base_url).rstrip("/")

    def _recover(self) -> None:
        """After a restart: queued runs are started again; runs that were executing lost their process."""
        for run in self.store.active_runs():
            if run["life_cycle_state"] in ("PENDING", "QUEUED"):
                self.runner.submit(run["run_id"])
            else:
                self.store.update_run(
                    run["run_id"],
                    life_cycle_state="INTERNAL_ERROR",
                    result_state="FAILED",
                    state_message="The local Jobs API restarted while this run was executing",
                    end_time=int(time.time() * 1000),
                )

    def start(self) -> LocalJobsApi:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="jobs-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.runner.shutdown()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- API operations ---------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        validation.submit_body(body)
        for task in body["tasks"]:
            try:
                task_command(task, workdir=self.runner.workdir, result_file=self.state_dir / "unused")
            except (TaskSpecError, KeyError, TypeError) as exc:
                raise validation.invalid(f"Invalid task {task.get('task_key')!r}: {exc}") from None
        run_id, created = self.store.create_run(body, self.state_dir / "logs")
        if created:
            self.runner.submit(run_id)
        return {"run_id": run_id}

    def get(self, params: dict[str, Any]) -> dict[str, Any]:
        run = self.store.run(_int_param(params, "run_id"))
        if run is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {params.get('run_id')} does not exist.")
        return self._run_json(run)

    def get_output(self, params: dict[str, Any]) -> dict[str, Any]:
        run_id = _int_param(params, "run_id")
        task = self.store.task(run_id)
        if task is None:
            if self.store.run(run_id) is not None:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "Retrieving the output of runs with multiple tasks is not supported. "
                    "Please retrieve the output of each individual task run instead.",
                )
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        parent = self.store.run(task["parent_run_id"])
        assert parent is not None
        out: dict[str, Any] = {"metadata": self._task_json(task, parent)}
        if task["error"]:
            out["error"] = task["error"]
            out["error_trace"] = task["error_trace"]
        log_path = Path(task["log_path"])
        if log_path.exists():
            text = log_path.read_text(errors="replace")
            out["logs"] = text[-5000:]
            out["logs_truncated"] = len(text) > 5000
        return out

    def cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        run_id = _int_param(body, "run_id")
        if self.store.run(run_id) is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        self.runner.cancel(run_id)
        return {}

    def list(self, params: dict[str, Any]) -> dict[str, Any]:
        """``runs/list``: newest first, ``limit`` 1-25 (0 = 25, default 20), ``page_token`` from a
        previous page's ``next_page_token`` / ``prev_page_token``, ``active_only`` / ``completed_only``."""
        limit = _int_param(params, "limit", default=DEFAULT_LIST_LIMIT) or MAX_LIST_LIMIT
        if not 0 < limit <= MAX_LIST_LIMIT:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"limit must be between 0 and {MAX_LIST_LIMIT}: {limit}")
        offset = _int_param(params, "offset", default=0)
        if offset < 0:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"offset must not be negative: {offset}")
        active_only, completed_only = _bool_param(params, "active_only"), _bool_param(params, "completed_only")
        if active_only and completed_only:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "active_only and completed_only cannot both be true")
        run_type = params.get("run_type")
        if run_type is not None and run_type not in RUN_TYPES:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"run_type must be one of {sorted(RUN_TYPES)}: {run_type!r}")
        states = "active" if active_only else "completed" if completed_only else "all"
        if run_type not in (None, "SUBMIT_RUN"):
            return {"runs": [], "has_more": False}  # every run here is a submitted one
        token = params.get("page_token")
        if token:
            direction, run_id = page_token.decode(token)
            edge = {"older_than": run_id} if direction == "next" else {"newer_than": run_id}
            rows = self.store.runs(states=states, limit=limit, **edge)
        else:
            rows = self.store.runs(states=states, limit=limit, offset=offset)
        out: dict[str, Any] = {"runs": [self._run_json(r) for r in rows]}
        has_older = bool(rows) and self.store.has_runs(states=states, older_than=rows[-1]["run_id"])
        if has_older:
            out["next_page_token"] = page_token.encode("next", rows[-1]["run_id"])
        if rows and self.store.has_runs(states=states, newer_than=rows[0]["run_id"]):
            out["prev_page_token"] = page_token.encode("prev", rows[0]["run_id"])
        out["has_more"] = has_older
        return out

    def _run_json(self, run: Any) -> dict[str, Any]:
        state = {"life_cycle_state": run["life_cycle_state"], "state_message": run["state_message"] or ""}
        if run["result_state"]:
            state["result_state"] = run["result_state"]
        tasks = [self._task_json(t, run) for t in self.store.tasks(run["run_id"])]
        return {
            "job_id": run["run_id"],
            "run_id": run["run_id"],
            "run_name": run["run_name"],
            "number_in_job": run["run_id"],
            "original_attempt_run_id": run["run_id"],
            "state": state,
            "status": _status(run),
            "tasks": tasks,
            "run_page_url": self.run_page_url(run["run_id"]),
            "start_time": run["start_time"] or 0,
            "end_time": run["end_time"] or 0,
            "setup_duration": 0,
            "execution_duration": _duration(run),
            "cleanup_duration": 0,
            "run_type": "SUBMIT_RUN",
            "format": "MULTI_TASK",
            "creator_user_name": "local",
            "attempt_number": 0,
        }

    def _task_json(self, task: Any, parent: Any) -> dict[str, Any]:
        state = {"life_cycle_state": task["life_cycle_state"], "state_message": task["state_message"] or ""}
        if task["result_state"]:
            state["result_state"] = task["result_state"]
        spec = json.loads(task["spec"])
        return {
            "run_id": task["run_id"],
            "task_key": task["task_key"],
            "state": state,
            "status": _status(task),
            "run_page_url": f"{self.run_page_url(parent['run_id'])}#task-{task['task_key']}",
            "start_time": task["start_time"] or 0,
            "end_time": task["end_time"] or 0,
            "execution_duration": _duration(task),
            "attempt_number": 0,
            **{k: v for k, v in spec.items() if k.endswith("_task")},
        }

    def run_page_signature(self, run_id: int) -> str:
        """Unguessable per run, derived from the token: a browser (the Airflow UI's "See Databricks
        Job Run" link) opens the run page with it and no bearer token, and it opens no other page."""
        return hmac.new(self.token.encode(), f"run-page:{run_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def run_page_url(self, run_id: int) -> str:
        return f"{self.page_url}/runs/{run_id}?sig={self.run_page_signature(run_id)}"

    def run_page(self, run_id: int) -> str:
        run = self.store.run(run_id)
        if run is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        parts = [
            f"<html><head><title>Run {run_id}: {html.escape(run['run_name'])}</title></head><body>",
            f"<h1>Run {run_id}: {html.escape(run['run_name'])}</h1>",
            f"<p>State: <b>{run['life_cycle_state']}</b> {run['result_state'] or ''} "
            f"{html.escape(run['state_message'] or '')}</p>",
        ]
        for task in self.store.tasks(run_id):
            path = Path(task["log_path"])
            text = path.read_text(errors="replace") if path.exists() else "(no output yet)"
            parts.append(
                f"<h2 id='task-{html.escape(task['task_key'])}'>Task {html.escape(task['task_key'])}: "
                f"{task['life_cycle_state']} {task['result_state'] or ''}</h2><pre>{html.escape(text)}</pre>"
            )
        parts.append("</body></html>")
        return "\n".join(parts)


def _status(row: Any) -> dict[str, Any]:
    state = row["life_cycle_state"]
    if state in ACTIVE:
        return {"state": "RUNNING" if state != "PENDING" else "PENDING"}
    return {"state": "TERMINATED", "termination_details": {"code": row["result_state"] or "INTERNAL_ERROR"}}


def _duration(row: Any) -> int:
    if row["start_time"] and row["end_time"]:
        return int(row["end_time"] - row["start_time"])
    return 0


def _int_param(params: dict[str, Any], name: str, *, default: int | None = None) -> int:
    value = params.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing or invalid parameter: {name}")
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing or invalid parameter: {name}") from None
    if not -(2**63) <= number < 2**63:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Parameter {name} is out of range: {value}")
    return number


def _bool_param(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Parameter {name} must be true or false: {value!r}")


class _Handler(BaseHTTPRequestHandler):
    api: LocalJobsApi
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a client may take to send its request (a stalled upload frees its thread)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            self._route(method)
        except ApiError as exc:
            self._json(exc.status, exc.body())
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        except Exception as exc:  # a bug: answer it, never drop the connection or print a traceback to the client
            log.exception("%s %s failed", method, self.path)
            self._json(500, {"error_code": "INTERNAL_ERROR", "message": f"Local Jobs API internal error: {exc}"})

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = self._body()
        fault = self.api.faults.for_request(method, url.path)
        if fault:
            if fault["action"] == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if fault["action"] == "delay":
                time.sleep(float(fault.get("seconds", 1)))
            if fault["action"] == "accept":
                self._authorize()
                self._send(200, b"{}", "application/json")
                return
            if fault["action"] == "status":
                code = int(fault.get("status", 500))
                error = "TOO_MANY_REQUESTS" if code == 429 else "INTERNAL_ERROR"
                raise ApiError(code, fault.get("error_code", error), fault.get("message", "injected fault"))
        if url.path.startswith("/runs/"):
            if method != "GET":
                raise ApiError(405, "METHOD_NOT_ALLOWED", "run pages are read with GET")
            run_id = _int_param({"run_id": url.path.removeprefix("/runs/")}, "run_id")
            signature = parse_qs(url.query).get("sig", [""])[0]
            if not hmac.compare_digest(signature, self.api.run_page_signature(run_id)):
                self._authorize()
            self._send(200, self.api.run_page(run_id).encode(), "text/html; charset=utf-8")
            return
        self._authorize()
        body = _json_object(raw)
        if url.path == "/local/faults":
            if method != "PUT":
                raise ApiError(405, "METHOD_NOT_ALLOWED", "/local/faults expects PUT")
            try:
                self.api.faults.replace(body.get("rules", []))
            except ValueError as exc:
                raise validation.invalid(str(exc)) from None
            self._json(200, {"rules": self.api.faults.rules})
            return
        match = _API.match(url.path)
        if not match:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {url.path}'")
        op = match.group(1)
        params = {**{k: v[0] for k, v in parse_qs(url.query).items()}, **body}
        expected = "POST" if op in ("submit", "cancel") else "GET"
        if method != expected:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{op} expects {expected}")
        result = {
            "submit": self.api.submit,
            "get": self.api.get,
            "get-output": self.api.get_output,
            "cancel": self.api.cancel,
            "list": self.api.list,
        }[op](params)
        self._json(200, result)

    def _body(self) -> bytes:
        """The request body, at most ``MAX_BODY_BYTES``; a bad or missing length is a 4xx, and the
        connection is closed after it (the unread rest of the body must not become a request)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(
                411, "INVALID_PARAMETER_VALUE", "Chunked request bodies are not supported: send Content-Length"
            )
        header = self.headers.get("Content-Length") or "0"
        if not header.isdigit() or len(header) > 18:
            self.close_connection = True
            raise validation.invalid(f"Invalid Content-Length: {header!r}")
        length = int(header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            if length <= 4 * MAX_BODY_BYTES:  # read it away, so the client gets to read the answer
                while length > 0:
                    length -= len(self.rfile.read(min(length, 1 << 20))) or length
            raise ApiError(
                413,
                "REQUEST_LIMIT_EXCEEDED",
                f"Request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes",
            )
        return self.rfile.read(length) if length else b""

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {self.api.token}".encode()):
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise validation.invalid(f"Invalid JSON given in the body of the request: {exc}") from None
    if not isinstance(body, dict):
        raise validation.invalid("Invalid JSON given in the body of the request - expected a map")
    return body


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse-jobs-api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    parser.add_argument("--state-dir", default=".lakehouse/jobs-api", help="SQLite run state and task logs")
    parser.add_argument(
        "--token", default=None, help=f"bearer token (default: $LOCAL_DATABRICKS_TOKEN or {DEFAULT_TOKEN})"
    )
    parser.add_argument("--max-concurrent-runs", type=int, default=4)
    parser.add_argument("--faults", help="JSON file with fault rules (see local_databricks/faults.py)")
    parser.add_argument(
        "--public-url", help="base of the run page URLs a browser follows (default: http://127.0.0.1:<port>)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os

    api = LocalJobsApi(
        state_dir=Path(args.state_dir).resolve(),
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("LOCAL_DATABRICKS_TOKEN", DEFAULT_TOKEN),
        max_concurrent_runs=args.max_concurrent_runs,
        public_url=args.public_url,
    )
    if args.faults:
        api.faults.replace(json.loads(Path(args.faults).read_text()))
    print(f"local Databricks Jobs API listening on {api.base_url} (state in {api.state_dir})", flush=True)
    try:
        api.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
