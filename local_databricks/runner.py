"""Executes submitted runs: each task in a subprocess, tasks in order, runs up to a concurrency limit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from local_databricks.faults import FaultRules
from local_databricks.store import RunStore, now_ms

log = logging.getLogger(__name__)

TASK_PROCESS = "local_databricks.task_process"


class TaskSpecError(ValueError):
    """A task the local service cannot run (Databricks would answer 400)."""


def task_command(task: dict[str, Any], *, workdir: Path, result_file: Path) -> list[str]:
    """The command line that runs one Databricks task locally (see ``task_process.py``); the
    child writes its outcome to ``result_file``."""
    wrapper = [sys.executable, "-m", TASK_PROCESS, str(result_file)]
    if "python_wheel_task" in task:
        wheel = task["python_wheel_task"]
        params = list(wheel.get("parameters") or [])
        params += [f"--{k}={v}" for k, v in (wheel.get("named_parameters") or {}).items()]
        return [*wrapper, "wheel", wheel["package_name"], wheel["entry_point"], *params]
    if "spark_python_task" in task:
        spec = task["spark_python_task"]
        path = Path(spec["python_file"].removeprefix("file:"))
        if not path.is_absolute():
            path = workdir / path
        return [*wrapper, "file", str(path), *(spec.get("parameters") or [])]
    raise TaskSpecError(f"task {task.get('task_key')!r}: only python_wheel_task and spark_python_task run locally")


TOKEN_VARIABLES = ("LOCAL_DATABRICKS_TOKEN", "DATABRICKS_TOKEN")


def child_environment(env: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """The environment of a job process: without the API token, under any name. A job on
    Databricks does not get the caller's token either."""
    return {
        k: v
        for k, v in env.items()
        if k not in TOKEN_VARIABLES and not any(secret and secret in v for secret in secrets)
    }


def _read_result(result_file: Path, returncode: int, log_text: str) -> tuple[str, str, str]:
    """(result_state, error, error_trace) of a finished task process, from the JSON it wrote. A
    process that died before writing it (killed, crashed interpreter) failed; its log's tail is
    the trace."""
    try:
        result = json.loads(result_file.read_text())
        return str(result["result_state"]), str(result.get("error", "")), str(result.get("error_trace", ""))
    except (OSError, ValueError, KeyError, TypeError):
        tail = "\n".join(log_text.splitlines()[-60:])
        return "FAILED", f"The task process ended with exit code {returncode} without reporting a result", tail


class Runner:
    def __init__(
        self,
        store: RunStore,
        faults: FaultRules,
        *,
        max_concurrent_runs: int,
        workdir: Path,
        env: dict[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.secrets = secrets  # never handed to a job process (the API token)
        self.faults = faults
        self.workdir = workdir
        self.env = env
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent_runs, thread_name_prefix="run")
        self._procs: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # task run id → (run id, process)
        self._cancelled: set[int] = set()
        self._stopping = False  # service shutting down: runs in flight are left as they are in the store
        self._lock = threading.Lock()

    def submit(self, run_id: int) -> None:
        self._pool.submit(self._execute, run_id)

    def cancel(self, run_id: int) -> None:
        run = self.store.run(run_id)
        if run is None or run["life_cycle_state"] not in ("PENDING", "QUEUED", "RUNNING"):
            return
        with self._lock:
            self._cancelled.add(run_id)
            procs = [proc for owner, proc in self._procs.values() if owner == run_id]
        for proc in procs:
            _terminate(proc)
        if run["life_cycle_state"] in ("PENDING", "QUEUED"):
            self._finish(run_id, "CANCELED", "Run cancelled before it started")

    def shutdown(self) -> None:
        """Stop like a crashed service would: kill task processes, record nothing more."""
        self._stopping = True
        with self._lock:
            procs = [proc for _, proc in self._procs.values()]
        for proc in procs:
            _terminate(proc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _finish(self, run_id: int, result: str, message: str, *, life_cycle: str = "TERMINATED") -> None:
        self.store.update_run(run_id, life_cycle_state="TERMINATING", state_message=message)
        for task in self.store.tasks(run_id):
            if task["life_cycle_state"] in ("PENDING", "QUEUED"):
                self.store.update_task(
                    task["run_id"],
                    life_cycle_state="SKIPPED",
                    result_state="CANCELED" if result == "CANCELED" else None,
                    state_message="Upstream task did not succeed",
                )
        self.store.update_run(
            run_id, life_cycle_state=life_cycle, result_state=result, state_message=message, end_time=now_ms()
        )

    def _execute(self, run_id: int) -> None:
        if self._stopping:
            return
        try:
            self._execute_run(run_id)
        except Exception as exc:
            log.exception("run %s: internal error", run_id)
            self._finish(run_id, "FAILED", f"Local Jobs API internal error: {exc}", life_cycle="INTERNAL_ERROR")

    def _execute_run(self, run_id: int) -> None:
        run = self.store.run(run_id)
        if run is None or run_id in self._cancelled or run["life_cycle_state"] != "PENDING":
            return
        payload = json.loads(run["payload"])
        # The provider's operator sends every JSON value as a string.
        timeout = float(payload.get("timeout_seconds") or 0)  # validated: digits
        deadline = time.monotonic() + timeout if timeout > 0 else None
        self.store.update_run(run_id, life_cycle_state="RUNNING", state_message="", start_time=now_ms())
        for task in self.store.tasks(run_id):
            outcome = self._run_task(run_id, run["run_name"], task, deadline)
            if self._stopping:
                return
            if outcome != "SUCCESS":
                message = {
                    "FAILED": f"Task {task['task_key']} failed with message: see get-output for run {task['run_id']}",
                    "TIMEDOUT": f"Task {task['task_key']} timed out",
                    "CANCELED": "Run cancelled",
                }[outcome]
                self._finish(run_id, outcome, message)
                return
        self._finish(run_id, "SUCCESS", "")

    def _run_task(self, run_id: int, run_name: str, task: Any, deadline: float | None) -> str:
        spec = json.loads(task["spec"])
        task_run_id = task["run_id"]
        log_path = Path(task["log_path"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        result_file = log_path.with_suffix(".result.json")
        result_file.unlink(missing_ok=True)
        self.store.update_task(task_run_id, life_cycle_state="RUNNING", start_time=now_ms())
        fault = self.faults.for_task(task["task_key"], run_name)
        if fault and fault["action"] == "fail":
            message = fault.get("message", "injected failure")
            log_path.write_text(f"Traceback (most recent call last):\nRuntimeError: {message}\n")
            return self._end_task(task_run_id, "FAILED", f"RuntimeError: {message}", log_path.read_text())
        if float(spec.get("timeout_seconds") or 0) > 0:
            task_deadline = time.monotonic() + float(spec["timeout_seconds"])
            deadline = min(deadline, task_deadline) if deadline else task_deadline
        if fault and fault["action"] == "hang":
            cmd = [sys.executable, "-c", "import time\nprint('injected hang', flush=True)\nwhile True: time.sleep(1)"]
        else:
            cmd = task_command(spec, workdir=self.workdir, result_file=result_file)
        env = {
            **child_environment(self.env if self.env is not None else os.environ, self.secrets),
            "DATABRICKS_JOB_RUN_ID": str(run_id),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("wb") as out:
            out.write(f"$ {shlex.join(cmd[4:] if cmd[2] == TASK_PROCESS else cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, env=env, start_new_session=True
            )
            with self._lock:
                self._procs[task_run_id] = (run_id, proc)
            try:
                while proc.poll() is None:
                    if run_id in self._cancelled:
                        _terminate(proc)
                        return self._end_task(task_run_id, "CANCELED", "Run cancelled", "")
                    if deadline and time.monotonic() > deadline:
                        _terminate(proc)
                        return self._end_task(task_run_id, "TIMEDOUT", "Task timed out", "")
                    time.sleep(0.2)
            finally:
                with self._lock:
                    self._procs.pop(task_run_id, None)
        text = log_path.read_text(errors="replace")
        if run_id in self._cancelled:
            return self._end_task(task_run_id, "CANCELED", "Run cancelled", "")
        result, error, trace = _read_result(result_file, proc.returncode, text)
        return self._end_task(task_run_id, result, error, trace)

    def _end_task(self, task_run_id: int, result: str, error: str, trace: str) -> str:
        self.store.update_task(
            task_run_id,
            life_cycle_state="TERMINATED",
            result_state=result,
            state_message=error,
            end_time=now_ms(),
            error=error if result == "FAILED" else None,
            error_trace=trace if result == "FAILED" else None,
        )
        return result


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
