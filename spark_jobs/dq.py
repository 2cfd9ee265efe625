"""Data-quality expectations, declared per table like Lakeflow expectations.

Each :class:`Expectation` has a name, a SQL condition that a good row satisfies (NULL counts as not
satisfied), an action and an optional threshold:

* ``warn``: the row is kept, the violation counted;
* ``quarantine``: the row goes to the table's quarantine with the expectation's name as reason;
* ``fail``: any violation fails the job with a message naming the expectation, the count and
  sample keys.

``max_fraction`` (any action) fails the job when more than that fraction of the rows violate it.
Counts go to a ``dq_metrics`` Delta table, keyed by run date, layer, table and expectation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, LongType, StringType, StructField, StructType, TimestampType

from spark_jobs.errors import DataQualityError

log = logging.getLogger(__name__)

QUARANTINE_REASONS = "_quarantine_reasons"
_OK_PREFIX = "_ok__"
ROWS_IN = "*"  # pseudo-expectation of a metrics row that accounts for the whole table


class Action(StrEnum):
    WARN = "warn"
    QUARANTINE = "quarantine"
    FAIL = "fail"


@dataclass(frozen=True)
class Expectation:
    name: str
    condition: str  # Spark SQL over the table's cleaned columns; true = the row is good
    action: Action = Action.WARN
    max_fraction: float | None = None
    description: str = ""

    @property
    def ok_column(self) -> str:
        return _OK_PREFIX + self.name


def unique(*columns: str) -> Expectation:
    """A ``fail`` expectation that ``columns`` identify one row (a window count per key)."""
    keys = ", ".join(columns)
    return Expectation(
        f"{'_'.join(columns)}_unique",
        f"count(1) OVER (PARTITION BY {keys}) = 1",
        Action.FAIL,
        description=f"({keys}) unique",
    )


METRICS_SCHEMA = StructType(
    [
        StructField("run_date", DateType()),
        StructField("layer", StringType()),
        StructField("table_name", StringType()),
        StructField("expectation", StringType()),
        StructField("action", StringType()),
        StructField("rows_in", LongType()),
        StructField("passed", LongType()),
        StructField("warned", LongType()),
        StructField("quarantined", LongType()),
        StructField("failed", LongType()),
        StructField("deduplicated", LongType()),
        StructField("written", LongType()),
        StructField("recorded_at", TimestampType()),
    ]
)


@dataclass
class ExpectationResult:
    expectation: Expectation
    rows_in: int
    violations: int

    @property
    def breached(self) -> bool:
        e = self.expectation
        if e.max_fraction is not None and self.rows_in and self.violations / self.rows_in > e.max_fraction:
            return True
        return e.action is Action.FAIL and self.violations > 0 and e.max_fraction is None


def check(expectations: Sequence[Expectation]) -> Callable[[DataFrame], DataFrame]:
    """Add one boolean ``_ok__<name>`` column per expectation and the array of quarantine reasons."""

    def transform(df: DataFrame) -> DataFrame:
        oks = {e.ok_column: F.coalesce(F.expr(e.condition), F.lit(False)) for e in expectations}
        out = df.withColumns(oks) if oks else df
        reasons = [F.when(~F.col(e.ok_column), F.lit(e.name)) for e in expectations if e.action is Action.QUARANTINE]
        return out.withColumn(QUARANTINE_REASONS, F.array_compact(F.array(*reasons)) if reasons else F.array())

    return transform


def is_quarantined() -> Column:
    return F.size(F.col(QUARANTINE_REASONS)) > 0


def drop_checks(expectations: Sequence[Expectation]) -> Callable[[DataFrame], DataFrame]:
    """Remove the columns :func:`check` added for ``expectations`` (named from them: no schema
    round trip to the engine)."""

    def transform(df: DataFrame) -> DataFrame:
        return df.drop(*[e.ok_column for e in expectations], QUARANTINE_REASONS)

    return transform


@dataclass
class CheckCounts:
    rows_in: int
    quarantined: int  # rows failing at least one quarantine expectation
    results: list[ExpectationResult]


def violations_query(checked: DataFrame, expectations: Sequence[Expectation], *, prefix: str = "") -> DataFrame:
    """One row: rows in, rows to quarantine and per-expectation violation counts of ``checked``,
    in columns named after ``prefix``, so that several such rows can be fetched in one query."""
    aggs = [F.count(F.lit(1)).alias(f"{prefix}rows_in"), F.count_if(is_quarantined()).alias(f"{prefix}quarantined")]
    aggs += [F.count_if(~F.col(e.ok_column)).alias(f"{prefix}v{i}") for i, e in enumerate(expectations)]
    return checked.agg(*aggs)


def counts_from_row(row: Mapping[str, Any], expectations: Sequence[Expectation], *, prefix: str = "") -> CheckCounts:
    """The :class:`CheckCounts` in a row of :func:`violations_query` (same ``prefix``)."""
    rows_in = int(row[f"{prefix}rows_in"] or 0)
    results = [ExpectationResult(e, rows_in, int(row[f"{prefix}v{i}"] or 0)) for i, e in enumerate(expectations)]
    return CheckCounts(rows_in, int(row[f"{prefix}quarantined"] or 0), results)


def count_violations(checked: DataFrame, expectations: Sequence[Expectation]) -> CheckCounts:
    """Rows in, rows to quarantine and per-expectation violation counts, in one pass over ``checked``."""
    return counts_from_row(violations_query(checked, expectations).collect()[0].asDict(), expectations)


def sample_keys(
    checked: DataFrame, keys: Sequence[str], breached: Sequence[ExpectationResult], *, line_column: str | None = None
) -> dict[str, list[str]]:
    """Up to five keys (``a/b``, plus `` (line n)`` when the rows carry file line numbers) of the rows
    violating each breached expectation, for the failure message."""
    cols = [*keys, line_column] if line_column else list(keys)
    out: dict[str, list[str]] = {}
    for r in breached:
        rows = checked.filter(~F.col(r.expectation.ok_column)).select(*cols).limit(5).collect()
        out[r.expectation.name] = [
            "/".join(str(row[k]) for k in keys) + (f" (line {row[line_column]})" if line_column else "") for row in rows
        ]
    return out


def metrics_rows(
    *,
    run_date: date,
    layer: str,
    table: str,
    results: Sequence[ExpectationResult],
    rows_in: int,
    quarantined: int,
    deduplicated: int,
    written: int,
    recorded_at: datetime,
) -> list[tuple[object, ...]]:
    """Rows of the dq_metrics table: one per expectation plus one ``*`` row for the table."""
    rows: list[tuple[object, ...]] = []
    for r in results:
        a = r.expectation.action
        v = r.violations
        rows.append(
            (
                run_date,
                layer,
                table,
                r.expectation.name,
                a.value,
                r.rows_in,
                r.rows_in - v,
                v if a is Action.WARN else 0,
                v if a is Action.QUARANTINE else 0,
                v if a is Action.FAIL else 0,
                None,
                None,
                recorded_at,
            )
        )
    rows.append(
        (
            run_date,
            layer,
            table,
            ROWS_IN,
            None,
            rows_in,
            written,
            None,
            quarantined,
            None,
            deduplicated,
            written,
            recorded_at,
        )
    )
    return rows


def summary(table: str, rows_in: int, results: Sequence[ExpectationResult]) -> str:
    """A readable block for the job log and for alerts."""
    lines = [f"{table}: {rows_in} rows in"]
    for r in results:
        flag = "  BREACHED" if r.breached else ""
        pct = f" ({100 * r.violations / r.rows_in:.2f}%)" if r.rows_in else ""
        lines.append(f"  [{r.expectation.action.value:10}] {r.expectation.name}: {r.violations} violations{pct}{flag}")
    return "\n".join(lines)


def raise_if_breached(
    table: str,
    *,
    rows_in: int,
    results: Sequence[ExpectationResult],
    samples: dict[str, list[str]],
    enforce: bool = True,
) -> None:
    """Raise :class:`DataQualityError` for breached expectations (with ``enforce=False``: log it)."""
    breached = [r for r in results if r.breached]
    if not breached:
        return
    parts = []
    for r in breached:
        e = r.expectation
        limit = f" (limit {e.max_fraction:.2%})" if e.max_fraction is not None else ""
        sample = ", ".join(samples.get(e.name, [])) or "n/a"
        parts.append(
            f"expectation {e.name!r} [{e.action.value}] failed on {r.violations} of {r.rows_in} rows{limit}: "
            f"{e.description or e.condition}; sample keys: {sample}"
        )
    message = f"data quality check failed for {table}: " + " | ".join(parts) + "\n" + summary(table, rows_in, results)
    if not enforce:
        log.warning("NOT ENFORCED (LAKEHOUSE_DQ_MODE=report): %s", message)
        return
    raise DataQualityError(message)
