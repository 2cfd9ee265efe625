"""Spark Connect round trips, counted in the client: plans executed, plans analysed, conf calls.

On Databricks (Spark Connect over the network, serverless) each round trip costs far more than on
the embedded engine, so their number is a figure of its own. Counted at the client's request
methods, one call each, whatever the engine behind them; deterministic for a given run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# client method -> what its request does
KINDS = {"_execute_and_fetch_as_iterator": "execute", "_execute": "execute", "_analyze": "analyze", "config": "config"}


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count every request of every Spark Connect client of this process while the block runs."""
    from pyspark.sql.connect.client.core import SparkConnectClient

    counts: Counter[str] = Counter()
    originals = {name: getattr(SparkConnectClient, name) for name in KINDS}

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[KINDS[name]] += 1
            return method(self, *args, **kwargs)

        return call

    for name, method in originals.items():
        setattr(SparkConnectClient, name, counted(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(SparkConnectClient, name, method)


def total(counts: Counter[str]) -> int:
    return sum(counts.values())
