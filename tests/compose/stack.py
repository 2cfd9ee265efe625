"""The compose stack under test and the real HTTP APIs it serves: Airflow's REST API v2 (as the UI
calls it), Mailpit's API and the local Databricks Jobs API.

Works with compose v2 (``docker compose``) and v1.29 (``docker-compose``); ``LAKEHOUSE_COMPOSE``
overrides the choice (e.g. ``LAKEHOUSE_COMPOSE="docker-compose"``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class StackError(RuntimeError):
    """The stack did not do what the test waited for (the message says what it last saw)."""


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 2.0) -> T:
    """Poll ``probe`` until it returns something other than None (exceptions count as "not yet")."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
            if result is not None:
                return result
        except Exception as exc:  # not ready yet: connection refused, 404 while starting, ...
            last = exc
        if time.monotonic() > deadline:
            raise StackError(f"gave up waiting for {what} after {timeout:.0f} s (last error: {last!r})")
        time.sleep(interval)


def docker_client() -> str | None:
    """The engine's own CLI first: a newer ``docker`` elsewhere on PATH may not speak its API."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def engine_running(docker: str) -> bool:
    return subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False).returncode == 0


def compose_command(docker: str) -> list[str] | None:
    """``docker compose`` (v2) if the plugin is there, else ``docker-compose`` (v1.29)."""
    override = os.environ.get("LAKEHOUSE_COMPOSE")
    if override:
        return shlex.split(override)
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def http_json(
    method: str,
    url: str,
    *,
    body: object = None,
    token: str | None = None,
    timeout: float = 30,
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise StackError(f"{method} {url} -> HTTP {exc.code}: {detail}") from None
    return json.loads(raw) if raw else None


@dataclass
class Compose:
    """One compose project: ``docker-compose.yaml`` of ``project_dir`` with settings in ``env``."""

    command: list[str]
    docker: str
    project_dir: Path
    project: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "-p", self.project, "-f", str(self.project_dir / "docker-compose.yaml"), *args]
        result = subprocess.run(
            argv,
            cwd=self.project_dir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise StackError(f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def exec(self, service: str, script: str, *, timeout: float = 120) -> str:
        return self.run("exec", "-T", service, "sh", "-c", script, timeout=timeout).stdout

    def container_states(self) -> dict[str, tuple[str, int]]:
        """Service container name → (status, exit code), as the engine reports them."""
        ids = self.run("ps", "-a", "-q").stdout.split()
        if not ids:
            return {}
        out = subprocess.run(
            [self.docker, "inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}", *ids],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = {}
        for line in out.splitlines():
            name, status, code = line.split()
            states[name.lstrip("/")] = (status, int(code))
        return states

    def failed_containers(self) -> list[str]:
        return [
            f"{name} {status} (exit {code})"
            for name, (status, code) in self.container_states().items()
            if status in ("restarting", "dead") or (status == "exited" and code != 0)
        ]


@dataclass
class Airflow:
    """Airflow's public REST API v2, called as the UI calls it (JWT from ``POST /auth/token``)."""

    base_url: str
    token: str = ""

    def login(self) -> None:
        # simple auth manager with all_admins (development): any credentials give an admin token
        answer = http_json("POST", f"{self.base_url}/auth/token", body={"username": "admin", "password": "admin"})
        self.token = answer["access_token"]

    def api(self, method: str, path: str, body: object = None) -> Any:
        return http_json(method, f"{self.base_url}/api/v2{path}", body=body, token=self.token)

    def health(self) -> dict[str, Any]:
        return http_json("GET", f"{self.base_url}/api/v2/monitor/health")  # type: ignore[no-any-return]

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        """A manual run as the UI's Trigger form sends it: no logical date, a conf."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf)})
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")  # type: ignore[no-any-return]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float) -> dict[str, Any]:
        """The run once it has finished (success or failed)."""

        def finished() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        try:
            return wait_for(f"DAG run {run_id} to finish", finished, timeout=timeout, interval=3)
        except StackError as exc:
            states = {k: (v["state"], v["try_number"]) for k, v in self.task_instances(dag_id, run_id).items()}
            raise StackError(f"{exc}; task states (state, try): {states}") from None


@dataclass
class Mailpit:
    base_url: str

    def subjects(self) -> list[str]:
        answer = http_json("GET", f"{self.base_url}/api/v1/messages")
        return [m["Subject"] for m in answer["messages"]]

    def message(self, subject: str) -> dict[str, Any]:
        """The newest message with this subject, in full (``Text``, ``HTML``)."""
        answer = http_json("GET", f"{self.base_url}/api/v1/messages")
        for summary in answer["messages"]:
            if summary["Subject"] == subject:
                return http_json("GET", f"{self.base_url}/api/v1/message/{summary['ID']}")  # type: ignore[no-any-return]
        raise StackError(f"no message {subject!r} in Mailpit; subjects: {self.subjects()}")


@dataclass
class JobsApi:
    """The local Databricks Jobs API, through the public Jobs API ``runs/list`` any workspace answers."""

    base_url: str
    token: str

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 25}
        while True:  # page tokens, as the Databricks SDK pages (offset is deprecated)
            query = urllib.parse.urlencode(params)
            page = http_json("GET", f"{self.base_url}/api/2.2/jobs/runs/list?{query}", token=self.token)
            runs += page.get("runs", [])
            if not page.get("has_more") or not page.get("next_page_token"):
                return runs
            params["page_token"] = page["next_page_token"]

    def runs_named(self, run_name: str) -> list[dict[str, Any]]:
        return [r for r in self.runs() if r.get("run_name") == run_name]
