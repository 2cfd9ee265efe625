"""The layers in order, so that the CLI, the benchmark and the tests run the same thing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.settings import Settings
from spark_jobs.target import LAYERS

# Job parameters (CLI flags) every layer accepts; a layer ignores those that are not its own.
# allow_empty_redelivery: bronze replaces a batch that had data with an empty re-delivered file.


def _bronze(
    spark: SparkSession, settings: Settings, run_date: date, *, allow_empty_redelivery: bool = False
) -> Sequence[Any]:
    from spark_jobs.bronze.job import run_bronze

    return run_bronze(spark, settings, run_date, allow_empty_redelivery=allow_empty_redelivery)


def _silver(
    spark: SparkSession, settings: Settings, run_date: date, *, allow_empty_redelivery: bool = False
) -> Sequence[Any]:
    from spark_jobs.silver.job import run_silver

    return run_silver(spark, settings, run_date)


def _gold(
    spark: SparkSession, settings: Settings, run_date: date, *, allow_empty_redelivery: bool = False
) -> Sequence[Any]:
    from spark_jobs.gold.job import run_gold

    return run_gold(spark, settings, run_date)


LayerJob = Callable[..., Sequence[Any]]
LAYER_JOBS: dict[str, LayerJob] = dict(zip(LAYERS, (_bronze, _silver, _gold), strict=True))  # in LAYERS order


def layers_between(first: str, last: str) -> list[str]:
    names = list(LAYER_JOBS)
    if names.index(first) > names.index(last):
        raise ValueError(f"--from {first} comes after --to {last}")
    return names[names.index(first) : names.index(last) + 1]


def run_layers(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    layers: Sequence[str] = tuple(LAYER_JOBS),
    *,
    allow_empty_redelivery: bool = False,
) -> dict[str, Sequence[Any]]:
    """Run ``layers`` for one batch date; return each layer's per-table results."""
    return {
        layer: LAYER_JOBS[layer](spark, settings, run_date, allow_empty_redelivery=allow_empty_redelivery)
        for layer in layers
    }
