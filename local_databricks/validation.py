"""Validation of a ``runs/submit`` body, as Databricks documents its fields: anything else is a 400
``INVALID_PARAMETER_VALUE`` before a run exists. Fields the local service does not use (clusters,
libraries, environments) are type-checked only loosely, so that real payloads pass unchanged."""

from __future__ import annotations

import re
from typing import Any

from local_databricks.errors import ApiError

TASK_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")  # Databricks: 1-100 characters of letters, digits, - and _
MAX_IDEMPOTENCY_TOKEN = 64
SOURCES = frozenset({"WORKSPACE", "GIT"})  # spark_python_task.source


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def _str_list(value: Any, where: str) -> None:
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise invalid(f"{where} must be a list of strings")


def _string(value: Any, where: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise invalid(f"{where} must be a non-empty string" if required else f"{where} must be a string")


def timeout_seconds(value: Any, where: str = "timeout_seconds") -> int:
    """An int >= 0; the provider's operator sends it as a string of digits."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(f"{where} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise invalid(f"{where} must be an integer: {value!r}") from None
    if not 0 <= number < 2**31:
        raise invalid(f"{where} must be between 0 and {2**31 - 1}: {number}")
    return number


def _task(task: Any, position: int) -> str:
    if not isinstance(task, dict):
        raise invalid(f"tasks[{position}] must be an object")
    key = task.get("task_key")
    if not isinstance(key, str) or not TASK_KEY.fullmatch(key):
        raise invalid(f"tasks[{position}].task_key must be 1-100 characters of letters, digits, '-' and '_': {key!r}")
    timeout_seconds(task.get("timeout_seconds"), f"task {key}: timeout_seconds")
    kinds = [k for k in task if k.endswith("_task")]
    if kinds == ["python_wheel_task"]:
        spec = task["python_wheel_task"]
        if not isinstance(spec, dict):
            raise invalid(f"task {key}: python_wheel_task must be an object")
        _string(spec.get("package_name"), f"task {key}: python_wheel_task.package_name", required=True)
        _string(spec.get("entry_point"), f"task {key}: python_wheel_task.entry_point", required=True)
        _str_list(spec.get("parameters"), f"task {key}: python_wheel_task.parameters")
        named = spec.get("named_parameters")
        if named is not None and not (isinstance(named, dict) and all(isinstance(v, str) for v in named.values())):
            raise invalid(f"task {key}: python_wheel_task.named_parameters must map names to strings")
    elif kinds == ["spark_python_task"]:
        spec = task["spark_python_task"]
        if not isinstance(spec, dict):
            raise invalid(f"task {key}: spark_python_task must be an object")
        _string(spec.get("python_file"), f"task {key}: spark_python_task.python_file", required=True)
        _str_list(spec.get("parameters"), f"task {key}: spark_python_task.parameters")
        if spec.get("source") is not None and spec["source"] not in SOURCES:
            raise invalid(f"task {key}: spark_python_task.source must be one of {sorted(SOURCES)}")
    else:
        raise invalid(
            f"Invalid task {key!r}: exactly one of python_wheel_task and spark_python_task (the task types that "
            f"run locally) is needed, found {kinds or 'none'}"
        )
    for name in ("existing_cluster_id", "environment_key", "run_if", "description"):
        _string(task.get(name), f"task {key}: {name}")
    for name in ("libraries", "depends_on"):
        if task.get(name) is not None and not isinstance(task[name], list):
            raise invalid(f"task {key}: {name} must be a list")
    if task.get("new_cluster") is not None and not isinstance(task["new_cluster"], dict):
        raise invalid(f"task {key}: new_cluster must be an object")
    return key


def submit_body(body: dict[str, Any]) -> None:
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise invalid("Missing required field: tasks")
    keys = [_task(task, position) for position, task in enumerate(tasks)]
    if len(set(keys)) != len(keys):
        raise invalid("Every task needs a unique task_key")
    _string(body.get("run_name"), "run_name")
    timeout_seconds(body.get("timeout_seconds"))
    token = body.get("idempotency_token")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_IDEMPOTENCY_TOKEN):
        raise invalid(f"idempotency_token must be a string of at most {MAX_IDEMPOTENCY_TOKEN} characters")
    environments = body.get("environments")
    if environments is not None and not (
        isinstance(environments, list) and all(isinstance(e, dict) for e in environments)
    ):
        raise invalid("environments must be a list of objects")
