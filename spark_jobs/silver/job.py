"""Silver job: one batch of bronze rows → cleaned, checked, de-duplicated current state.

Per table and batch date D:
1. clean the bronze rows of D (pure transforms, rules S1–S18);
2. evaluate the expectations; rows failing a ``quarantine`` expectation go to
   ``silver.<table>_quarantine`` (original text + reasons), replacing that table's slice for D;
3. keep the latest row per key (in the batch) and ``MERGE`` it into ``silver.<table>``: a row
   replaces the stored one only if it is at least as recent (``recency``), so batches can be
   re-run or back-filled in any order and converge to the same state;
4. check the conservation law — bronze rows of D = rows now in silver from D + quarantined rows +
   rows superseded by de-duplication — and write per-expectation counts to ``silver.dq_metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import dq
from spark_jobs.contracts import QUARANTINE_SUFFIX, bronze_schema
from spark_jobs.engine import materialize
from spark_jobs.errors import ConservationError
from spark_jobs.metrics import METRICS_TABLE, write_metrics
from spark_jobs.settings import Settings
from spark_jobs.silver.tables import SILVER_TABLES, SilverTable
from spark_jobs.silver.transforms import LINEAGE, RAW, latest_per_key, with_version_end_dates
from spark_jobs.sources import SOURCES
from spark_jobs.tables import TableStore, batch_predicate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SilverTableResult:
    table: str
    rows_in: int
    written: int
    quarantined: int
    deduplicated: int
    summary: str

    def __str__(self) -> str:
        return (
            f"{self.table}: {self.rows_in} in = {self.written} in silver + {self.quarantined} quarantined"
            f" + {self.deduplicated} superseded"
        )


def _newer_sql(spec: SilverTable) -> str:
    s = ", ".join(r.format(a="s.") for r in spec.recency)
    t = ", ".join(r.format(a="t.") for r in spec.recency)
    return f"struct({s}) >= struct({t})"


def merge_source(spec: SilverTable, candidates: DataFrame, stored: DataFrame | None) -> DataFrame:
    """What to MERGE: the batch's latest row per key; for versioned products, every stored version
    of the touched products too, so that end dates are recomputed across all versions (S9)."""
    if not spec.versioned:
        return candidates
    assert spec.keys[0] == "prd_key"
    if stored is None:
        return candidates.transform(with_version_end_dates)
    touched = candidates.select("prd_key").distinct()
    existing = stored.drop("prd_end_dt").join(touched, "prd_key", "left_semi")
    versions = existing.unionByName(candidates.drop("prd_end_dt")).transform(latest_per_key(spec.keys, spec.recency))
    return versions.transform(with_version_end_dates).select(*candidates.columns)


def run_silver_table(
    store: TableStore, spec: SilverTable, run_date: date, *, metrics: list[tuple[object, ...]], recorded_at: datetime
) -> SilverTableResult:
    """Process one table's batch; append its dq_metrics rows to ``metrics`` (also when it fails)."""
    bronze_ref = store.ref("bronze", spec.name)
    if store.exists(bronze_ref):
        bronze = store.read(bronze_ref)
    else:  # never delivered so far: an empty batch, so that the silver tables exist for gold
        bronze = store.spark.createDataFrame([], bronze_schema(SOURCES[spec.name]))
    target = store.ref("silver", spec.name)
    quarantine = store.ref("silver", spec.name + QUARANTINE_SUFFIX)
    where = batch_predicate(run_date)
    expectations = spec.expectations(run_date)

    def record(results: list[dq.ExpectationResult], *, written: int, superseded: int) -> None:
        rows = dq.metrics_rows(
            run_date=run_date,
            layer="silver",
            table=spec.name,
            results=results,
            rows_in=counts.rows_in,
            quarantined=counts.quarantined,
            deduplicated=superseded,
            written=written,
            recorded_at=recorded_at,
        )
        metrics.extend(rows)

    cleaned = bronze.filter(where).transform(spec.clean(run_date))
    checked = materialize(cleaned.transform(dq.check(expectations)))
    counts = dq.count_violations(checked, expectations)
    results = counts.results
    log.info("silver expectations\n%s", dq.summary(spec.name, counts.rows_in, results))
    breached = [r for r in results if r.breached]
    if breached and store.settings.dq_enforce:  # record what was seen, then fail before anything is written
        record(results, written=0, superseded=0)
        dq.raise_if_breached(
            spec.name, counts.rows_in, results, dq.sample_keys(checked, spec.keys, breached, line_column="_line_number")
        )
    dq.raise_if_breached(spec.name, counts.rows_in, results, {}, enforce=False)

    rejected = checked.filter(dq.is_quarantined()).select(
        f"{RAW}.*", *LINEAGE, F.array_join(dq.QUARANTINE_REASONS, "; ").alias("_reasons")
    )
    store.replace_slice(
        rejected, quarantine, where=where, partition_by=("_batch_date",), known_empty=counts.quarantined == 0
    )

    good = dq.drop_checks(checked.filter(~dq.is_quarantined())).drop(RAW)
    written = superseded = 0
    if counts.rows_in > counts.quarantined or not store.exists(target):
        candidates = good.transform(latest_per_key(spec.keys, spec.recency))
        if spec.versioned:
            candidates = candidates.withColumn("prd_end_dt", F.lit(None).cast("date"))
        stored = store.read(target) if store.exists(target) else None
        source = materialize(merge_source(spec, candidates, stored))
        if spec.output_expectations:
            out_checked = source.transform(dq.check(spec.output_expectations))
            out = dq.count_violations(out_checked, spec.output_expectations)
            results = [*results, *out.results]
            if any(r.breached for r in out.results):  # integrity (keys, versions): always enforced
                record(results, written=0, superseded=0)
                dq.raise_if_breached(
                    spec.name,
                    out.rows_in,
                    out.results,
                    dq.sample_keys(out_checked, spec.keys, out.results, line_column="_line_number"),
                )
        store.merge(
            source,
            target,
            keys=spec.keys,
            update_when=None if spec.versioned else _newer_sql(spec),
            slice_column="_batch_date",
        )
        written, superseded = _written_and_superseded(good, store.read(target), spec, where)
    record(results, written=written, superseded=superseded)
    if counts.rows_in != written + counts.quarantined + superseded:
        raise ConservationError(
            f"silver {spec.name} batch {run_date}: {counts.rows_in} bronze rows but {written} in silver + "
            f"{counts.quarantined} quarantined + {superseded} superseded. A re-delivered batch with other rows "
            "than before leaves rows of the earlier delivery in silver."
        )
    result = SilverTableResult(
        spec.name,
        counts.rows_in,
        written,
        counts.quarantined,
        superseded,
        dq.summary(spec.name, counts.rows_in, results),
    )
    log.info("silver %s", result)
    return result


def _written_and_superseded(good: DataFrame, stored: DataFrame, spec: SilverTable, where: str) -> tuple[int, int]:
    """Read back after the merge, in one query: rows of the batch now in the table, and rows of the
    batch that passed the checks but whose key holds another (more recent) version.

    A row whose key is not in the table at all is *not* counted as superseded: it went missing,
    and the conservation check must catch it.
    """
    written = stored.filter(where).select(F.lit(1).alias("_written"), F.lit(0).alias("_superseded"))
    winners = stored.select(*spec.keys, *[F.col(c).alias(f"_w{c}") for c in LINEAGE])
    joined = good.select(*spec.keys, *LINEAGE).join(winners, list(spec.keys), "inner")
    lost = joined.filter(
        (F.col("_w_batch_date") != F.col("_batch_date")) | (F.col("_w_line_number") != F.col("_line_number"))
    ).select(F.lit(0).alias("_written"), F.lit(1).alias("_superseded"))
    row = written.unionByName(lost).agg(F.sum("_written").alias("w"), F.sum("_superseded").alias("s")).first()
    return (int(row["w"] or 0), int(row["s"] or 0)) if row else (0, 0)


def run_silver(
    spark: SparkSession, settings: Settings, run_date: date, *, tables: Iterable[str] | None = None
) -> list[SilverTableResult]:
    store = TableStore(spark, settings)
    recorded_at = datetime.now(UTC)
    results: list[SilverTableResult] = []
    metrics: list[tuple[object, ...]] = []
    names = list(tables or SILVER_TABLES)
    written = [store.ref("silver", n + suffix) for n in names for suffix in ("", QUARANTINE_SUFFIX)]
    # One writer of the layer's tables from the first read to the last commit (see TableStore).
    with store.writing([*written, store.ref("silver", METRICS_TABLE)]):
        try:
            for name in names:
                results.append(
                    run_silver_table(store, SILVER_TABLES[name], run_date, metrics=metrics, recorded_at=recorded_at)
                )
        finally:
            write_metrics(store, "silver", run_date, metrics)
    return results
