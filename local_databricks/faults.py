"""Fault injection rules, set per request path or per task, for tests and demos.

HTTP rules: ``{"path": "/api/2.2/jobs/runs/get", "action": "status", "status": 429, "times": 2}``;
``"action": "drop"`` closes the connection without an answer; ``"action": "delay", "seconds": 3``;
``"action": "accept"`` answers 200 ``{}`` and does nothing (a cancel acknowledged while the run goes on).
Task rules: ``{"task": "silver", "action": "fail", "times": 1, "message": "..."}`` fails the task
(matching task key or run name) before it starts; ``"action": "hang"`` keeps it running until it
is cancelled or times out. ``times`` = -1 means always.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRules:
    rules: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def replace(self, rules: Any) -> None:
        """Validated first: a bad rule is a ``ValueError`` (HTTP 400) and changes nothing."""
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise ValueError("fault rules must be a list of objects")
        for rule in rules:
            _check(rule)
        with self._lock:
            self.rules = [{"times": 1, **r} for r in rules]

    def _take(self, predicate: Any) -> dict[str, Any] | None:
        with self._lock:
            for rule in self.rules:
                if rule["times"] != 0 and predicate(rule):
                    if rule["times"] > 0:
                        rule["times"] -= 1
                    return dict(rule)
        return None

    def for_request(self, method: str, path: str) -> dict[str, Any] | None:
        return self._take(
            lambda r: "path" in r and path.startswith(r["path"]) and r.get("method", method).upper() == method
        )

    def for_task(self, task_key: str, run_name: str) -> dict[str, Any] | None:
        return self._take(lambda r: "task" in r and (r["task"] in task_key or r["task"] in run_name))


def _check(rule: dict[str, Any]) -> None:
    if rule.get("action") not in {"status", "drop", "delay", "accept", "fail", "hang"}:
        raise ValueError(f"unknown fault action in {rule}")
    if not isinstance(rule.get("path", ""), str) or not isinstance(rule.get("task", ""), str):
        raise ValueError(f"'path' and 'task' must be strings: {rule}")
    if "path" not in rule and "task" not in rule:
        raise ValueError(f"a fault rule needs 'path' or 'task': {rule}")
    times = rule.get("times", 1)
    if type(times) is not int or times < -1:
        raise ValueError(f"'times' must be an integer >= -1: {rule}")
    status = rule.get("status", 500)
    if type(status) is not int or not 400 <= status <= 599:
        raise ValueError(f"'status' must be an HTTP error status (400-599): {rule}")
    seconds = rule.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
        raise ValueError(f"'seconds' must be a number of seconds (0-600): {rule}")
    for name in ("message", "error_code", "method"):
        if not isinstance(rule.get(name, ""), str):
            raise ValueError(f"{name!r} must be a string: {rule}")
