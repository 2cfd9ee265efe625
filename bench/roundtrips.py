"""Spark Connect round trips, counted in the client: plans executed, plans analysed, conf calls.

On Databricks (Spark Connect over the network, serverless) each round trip costs far more than on
the embedded engine, so their number is a figure of its own. Counted at the client's request
methods, one call each, whatever the engine behind them; deterministic for a given run.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# client method -> what its request does
KINDS = {"_execute_and_fetch_as_iterator": "execute", "_execute": "execute", "_analyze": "analyze", "config": "config"}


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count every request of every Spark Connect client of this process while the block runs."""
    counts: Counter[str] = Counter()
    with _on_request(lambda kind: counts.update([kind])):
        yield counts


@contextmanager
def call_sites(package: str = "spark_jobs") -> Iterator[Counter[str]]:
    """Count the requests per call site: the innermost frame of ``package`` that issued each one
    (``path:line function kind``), to see which lines of the jobs cost round trips."""
    sites: Counter[str] = Counter()
    marker = f"/{package}/"

    def record(kind: str) -> None:
        frame = sys._getframe(2)
        while frame is not None and marker not in frame.f_code.co_filename.replace("\\", "/"):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            sites[f"(outside {package}) {kind}"] += 1
            return
        path = Path(frame.f_code.co_filename)
        where = "/".join(path.parts[path.parts.index(package) :])
        sites[f"{where}:{frame.f_lineno} {frame.f_code.co_name} {kind}"] += 1

    with _on_request(record):
        yield sites


@contextmanager
def counting_inside(function: Callable[..., Any]) -> Iterator[Counter[str]]:
    """Count the requests issued while ``function`` runs (its code on the caller's stack), by kind."""
    counts: Counter[str] = Counter()
    code = getattr(function, "__code__", None)
    if code is None:
        raise TypeError(f"{function!r} is not a Python function")

    def record(kind: str) -> None:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code is not code:
            frame = frame.f_back  # type: ignore[assignment]
        if frame is not None:
            counts[kind] += 1

    with _on_request(record):
        yield counts


@contextmanager
def _on_request(callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(kind)`` on every request of every Spark Connect client while the block runs."""
    from pyspark.sql.connect.client.core import SparkConnectClient

    originals = {name: getattr(SparkConnectClient, name) for name in KINDS}

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            callback(KINDS[name])
            return method(self, *args, **kwargs)

        return call

    for name, method in originals.items():
        setattr(SparkConnectClient, name, counted(name, method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(SparkConnectClient, name, method)


def total(counts: Counter[str]) -> int:
    return sum(counts.values())
