"""Runs one task inside its subprocess the way Databricks does, and writes the outcome as JSON.

``python -m local_databricks.task_process RESULT_FILE wheel PACKAGE ENTRY_POINT [PARAM ...]``:
a ``python_wheel_task``. The entry point is looked up in the installed package's metadata
(``console_scripts``); if it is not there, ``<package>.<entry_point>`` is called as a function,
as the Jobs API documents. ``sys.argv`` becomes ``[entry_point, *params]``, the function is called
and whatever it returns is ignored. Any uncaught exception, including any ``SystemExit`` (also
``SystemExit(0)``), fails the task.

``python -m local_databricks.task_process RESULT_FILE file PATH [PARAM ...]``: a
``spark_python_task``, run as ``__main__``. Like a Python process, ``SystemExit`` with code 0 or
``None`` is a success and any other exit code a failure.

The result file holds ``{"result_state": "SUCCESS"}`` or ``{"result_state": "FAILED", "error":
"<Type>: <message>", "error_trace": "<traceback>"}``: the runner reads it instead of scraping logs.
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any


class EntryPointNotFoundError(LookupError):
    """Neither the package's metadata nor the package itself has the entry point."""


def _normalize(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def find_entry_point(package: str, name: str) -> Callable[..., Any]:
    """The function Databricks would call for ``python_wheel_task(package_name, entry_point)``."""
    try:
        points = distribution(package).entry_points
    except PackageNotFoundError:
        points = None
    if points is not None:
        for point in points:
            if point.group == "console_scripts" and point.name == name:
                func: Callable[..., Any] = point.load()
                return func
    try:
        module = importlib.import_module(_normalize(package))
    except ImportError:
        module = None
    fallback = getattr(module, name, None) if module is not None else None
    if not callable(fallback):
        raise EntryPointNotFoundError(
            f"No entry point {name!r} in the metadata of package {package!r}, and no function "
            f"{_normalize(package)}.{name}()"
        )
    return fallback


def _error(exc: BaseException) -> dict[str, str]:
    message = str(exc)
    return {
        "result_state": "FAILED",
        "error": f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
        "error_trace": "".join(traceback.format_exception(exc)),
    }


def run_wheel_task(package: str, name: str, params: list[str]) -> dict[str, str]:
    try:
        func = find_entry_point(package, name)
        sys.argv = [name, *params]
        func()  # the returned value is ignored, as on Databricks
    except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the task too
        return _error(exc)
    return {"result_state": "SUCCESS"}


def run_python_file(path: str, params: list[str]) -> dict[str, str]:
    sys.argv = [path, *params]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code in (0, None):
            return {"result_state": "SUCCESS"}
        return _error(exc)
    except BaseException as exc:
        return _error(exc)
    return {"result_state": "SUCCESS"}


def main(argv: list[str]) -> int:
    result_file, kind, *rest = argv
    if kind == "wheel":
        package, name, *params = rest
        result = run_wheel_task(package, name, params)
    else:
        path, *params = rest
        result = run_python_file(path, params)
    if result["result_state"] != "SUCCESS":
        sys.stderr.write(result["error_trace"])
    sys.stdout.flush()
    sys.stderr.flush()
    Path(result_file).write_text(json.dumps(result))
    return 0 if result["result_state"] == "SUCCESS" else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
