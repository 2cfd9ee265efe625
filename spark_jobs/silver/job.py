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

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StructField, StructType

from spark_jobs import dq
from spark_jobs.contracts import QUARANTINE_SUFFIX, bronze_schema
from spark_jobs.engine import empty_frame, fetch_one, is_local_relation, local_rows, materialize, schemas_of
from spark_jobs.errors import ConservationError
from spark_jobs.metrics import METRICS_TABLE, write_metrics
from spark_jobs.settings import Settings
from spark_jobs.silver.tables import SILVER_TABLES, SilverTable
from spark_jobs.silver.transforms import LINEAGE, RAW, latest_per_key, newest_per_key, with_version_end_dates
from spark_jobs.sources import SOURCES
from spark_jobs.tables import PreparedMerge, TableStore, batch_predicate

log = logging.getLogger(__name__)

SLICE_COLUMN = "_batch_date"  # of every silver table: the batch each row came from


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


@dataclass(frozen=True)
class MergePlan:
    """What the batch does to ``silver.<table>``, decided before anything is written."""

    upserts: DataFrame  # the final row of every key the batch affects (stored rows unchanged included)
    deletes: DataFrame | None  # keys whose stored row goes: only an earlier delivery of the batch had them
    fallback: bool  # whether other batches' rows were consulted (a re-delivered batch)
    # ``upserts`` with what merging them would do, from the join that chose them (``newest_per_key``
    # with ``compare_on``): when that join saw every stored row of their keys (a first delivery of a
    # keyed table), else None
    compared: DataFrame | None = None


def plan_merge(
    spec: SilverTable,
    candidates: DataFrame,
    stored: DataFrame | None,
    *,
    columns: Sequence[str],
    where: str,
    replaced: DataFrame | None = None,
    earlier: DataFrame | None = None,
) -> MergePlan:
    """The final state of every key the batch touches, as if this delivery of the batch were the
    only one that ever arrived.

    ``candidates``: the batch's latest good row per key, with ``columns`` (passed in: asking a plan
    for its schema is a round trip). ``replaced``: keys whose stored row came
    from an earlier delivery of this batch (``where``), None on a first delivery. ``earlier``: the
    good rows of the other batches for those keys (their fallback when this delivery no longer has
    them, or has an older version). A key's final row is its most recent (``recency``) among the
    batch's row, its stored row from another batch and those fallbacks; a replaced key with none
    is deleted. Versioned products: every version of a touched product is recomputed, so that end
    dates follow the versions that remain (S9).
    """
    keys = list(spec.keys)
    rows = candidates.drop("prd_end_dt") if spec.versioned else candidates
    row_columns = [c for c in columns if not (spec.versioned and c == "prd_end_dt")]
    if stored is None:
        final = rows.transform(with_version_end_dates) if spec.versioned else rows
        return MergePlan(final.select(*columns), None, False)
    newest = functools.partial(newest_per_key, keys=spec.keys, recency=spec.recency, columns=row_columns)
    others = stored.filter(~F.expr(where))  # the stored rows of other batches compete with the batch's
    if spec.versioned:  # every stored version of a touched product
        touched = rows.select("prd_key")
        if replaced is not None:
            touched = touched.unionByName(replaced.select("prd_key"))
        others = others.join(touched.distinct(), "prd_key", "left_semi")
        final = rows.transform(newest(others))
    elif replaced is None:  # a first delivery: ``others`` is every stored row, so compare with them
        compared = rows.transform(newest(others, keep_other_keys=False, compare_on=SLICE_COLUMN))
        return MergePlan(compared.select(*columns), None, False, compared)
    else:  # a replaced key's stored row is of this batch: only the batch's keys have other rows
        final = rows.transform(newest(others, keep_other_keys=False))
    if earlier is not None:
        final = final.transform(newest(earlier.select(*row_columns)))
    if spec.versioned:
        final = final.transform(with_version_end_dates)
    final = final.select(*columns)
    deletes = None if replaced is None else replaced.join(final.select(*keys), keys, "left_anti")
    return MergePlan(final, deletes, earlier is not None)


@dataclass
class _TablePlan:
    """One table's batch, planned and not yet run: every figure the checks need is a column of
    ``query`` (one row, columns prefixed per table), so that the whole layer's checks are fetched
    in a single query, whatever the number of tables."""

    spec: SilverTable
    prefix: str
    expectations: tuple[dq.Expectation, ...]
    checked: DataFrame  # cleaned bronze rows of the batch with their check columns
    rejected: DataFrame  # what goes to the quarantine slice
    source: DataFrame  # the planned rows of the merge (computed)
    out_checked: DataFrame | None  # the planned rows with the output expectations' check columns
    merge: PreparedMerge | None  # None: nothing to merge (see ``_Planned.nothing_to_merge``)
    query: DataFrame
    # The schemas of ``rejected`` and ``source``, once fetched with the checks (see ``run_silver``).
    rejected_schema: StructType | None = None
    source_schema: StructType | None = None

    def counts(self, row: Mapping[str, Any]) -> dq.CheckCounts:
        return dq.counts_from_row(row, self.expectations, prefix=f"{self.prefix}in_")

    def output_counts(self, row: Mapping[str, Any]) -> dq.CheckCounts | None:
        if self.out_checked is None:
            return None
        return dq.counts_from_row(row, self.spec.output_expectations, prefix=f"{self.prefix}out_")

    def written_and_superseded(self, row: Mapping[str, Any]) -> tuple[int, int]:
        return int(row[f"{self.prefix}written"] or 0), int(row[f"{self.prefix}superseded"] or 0)


@dataclass(frozen=True)
class _Batch:
    """One table's bronze rows and the batch's cleaned and checked rows (not computed yet)."""

    spec: SilverTable
    prefix: str
    expectations: tuple[dq.Expectation, ...]
    bronze: DataFrame
    checked: DataFrame


@dataclass(frozen=True)
class _Planned:
    """One table's checked batch (computed) and its planned merge (not computed yet)."""

    batch: _Batch
    checked: DataFrame
    rejected: DataFrame
    good: DataFrame
    plan: MergePlan
    columns: tuple[str, ...]  # of the planned rows
    # The batch has no row and replaces no earlier delivery (a source not delivered that day): the
    # table stays as it is, so it is neither read nor merged into.
    nothing_to_merge: bool = False


def _batch(store: TableStore, spec: SilverTable, run_date: date, *, prefix: str) -> _Batch:
    """Clean the table's bronze rows of the batch and add their check columns (rules S1-S18)."""
    bronze_ref = store.ref("bronze", spec.name)
    if store.exists(bronze_ref):
        bronze = store.read(bronze_ref)
    else:  # never delivered so far: an empty batch, so that the silver tables exist for gold
        bronze = store.spark.createDataFrame([], bronze_schema(SOURCES[spec.name]))
    expectations = spec.expectations(run_date)
    cleaned = bronze.filter(batch_predicate(run_date)).transform(spec.clean)
    return _Batch(spec, prefix, expectations, bronze, cleaned.transform(dq.check(expectations)))


def _plan(store: TableStore, batch: _Batch, checked: DataFrame, checked_schema: StructType, run_date: date) -> _Planned:
    """Plan what the batch's good rows do to ``silver.<table>`` (see :func:`plan_merge`); ``checked``
    is the batch's checked rows, computed, with its schema (so no plan is asked for its columns)."""
    spec, expectations = batch.spec, batch.expectations
    target = store.ref("silver", spec.name)
    where = batch_predicate(run_date)
    rejected = checked.filter(dq.is_quarantined()).select(
        f"{RAW}.*", *LINEAGE, F.array_join(dq.QUARANTINE_REASONS, "; ").alias("_reasons")
    )
    good = checked.filter(~dq.is_quarantined()).transform(dq.drop_checks(expectations)).drop(RAW)
    dropped = {e.ok_column for e in expectations} | {dq.QUARANTINE_REASONS, RAW}
    columns = [c for c in checked_schema.fieldNames() if c not in dropped]  # good's columns
    exists = store.exists(target)
    # A batch whose slice already holds rows is a re-run or a re-delivery: this delivery replaces
    # the earlier one, so the keys only the earlier one had fall back to other batches' rows.
    redelivered = exists and not store.slice_is_empty(target, where)
    candidates = good.transform(latest_per_key(keys=spec.keys, recency=spec.recency, columns=columns))
    if spec.versioned:
        candidates = candidates.withColumn("prd_end_dt", F.lit(None).cast("date"))
        if "prd_end_dt" not in columns:
            columns = [*columns, "prd_end_dt"]  # as withColumn added it
    if exists and not redelivered and local_rows(checked) == 0:
        # No row and no earlier delivery to replace (a source not delivered that day): nothing to
        # merge, so the table is not read. The planned rows are none, held in the plan as such.
        fields = {f.name: f for f in checked_schema.fields}
        if spec.versioned:  # as ``candidates`` has it
            fields["prd_end_dt"] = StructField("prd_end_dt", DateType())
        none = MergePlan(empty_frame(store.spark, StructType([fields[c] for c in columns])), None, False)
        return _Planned(batch, checked, rejected, good, none, tuple(columns), nothing_to_merge=True)
    stored = store.read(target) if exists else None
    replaced = earlier = None
    if stored is not None and redelivered:
        replaced = materialize(stored.filter(where).select(*spec.keys))
        earlier = _earlier_rows(batch.bronze, spec, expectations, where=where, keys=replaced)
    plan = plan_merge(spec, candidates, stored, columns=columns, where=where, replaced=replaced, earlier=earlier)
    return _Planned(batch, checked, rejected, good, plan, tuple(columns))


def _table_plan(
    store: TableStore,
    planned: _Planned,
    *,
    run_date: date,
) -> _TablePlan:
    """The one-row query of a planned table's checks (rows in, violations, conservation, what the
    merge would do), over its planned rows, computed here (with what merging them does, when the
    plan has it: ``MergePlan.compared``)."""
    batch, spec = planned.batch, planned.batch.spec
    prefix, where = batch.prefix, batch_predicate(run_date)
    compared = planned.plan.compared
    # A batch small enough to be held in the plans has a small plan too (its keys' final rows).
    small = is_local_relation(planned.checked)
    source = planned.plan.upserts
    if not planned.nothing_to_merge:  # (else already rows held in the plan: none)
        source = materialize(compared if compared is not None else source, small=small)
    if compared is not None:  # the planned rows with what merging them does
        compared, source = source, source.select(*planned.columns)
    queries = [dq.violations_query(planned.checked, batch.expectations, prefix=f"{prefix}in_")]
    deletes = materialize(planned.plan.deletes, small=small) if planned.plan.deletes is not None else None
    out_checked = None
    if spec.output_expectations:
        out_checked = source.transform(dq.check(spec.output_expectations))
        queries.append(dq.violations_query(out_checked, spec.output_expectations, prefix=f"{prefix}out_"))
    # The conservation law, on the planned state: checked before anything is committed.
    queries.append(_written_and_superseded(planned.good, planned=source, spec=spec, where=where, prefix=prefix))
    merge = None
    if not planned.nothing_to_merge:
        merge = store.prepare_merge(
            source,
            store.ref("silver", spec.name),
            keys=spec.keys,
            slice_column=SLICE_COLUMN,
            deletes=deletes,
            prefix=f"{prefix}merge_",
            columns=planned.columns,
            compared=compared,
        )
    if merge is not None and merge.effect_query is not None:
        queries.append(merge.effect_query)
    return _TablePlan(
        spec,
        prefix,
        batch.expectations,
        planned.checked,
        planned.rejected,
        source,
        out_checked,
        merge,
        functools.reduce(DataFrame.crossJoin, queries),
    )


def _decide(
    plan: _TablePlan,
    row: Mapping[str, Any],
    *,
    store: TableStore,
    run_date: date,
    metrics: list[tuple[object, ...]],
    recorded_at: datetime,
    writes: list[Callable[[], None]],
) -> SilverTableResult:
    """Check one planned table on the fetched figures: record its dq_metrics rows (also when it
    fails), raise on a breached expectation or a broken conservation law, else leave its writes
    (the quarantine slice, then the merge) in ``writes``."""
    spec = plan.spec
    counts = plan.counts(row)
    results = counts.results

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

    log.info("silver expectations\n%s", dq.summary(spec.name, counts.rows_in, results))
    breached = [r for r in results if r.breached]
    if breached and store.settings.dq_enforce:  # record what was seen, then fail before anything is written
        record(results, written=0, superseded=0)
        dq.raise_if_breached(
            spec.name,
            rows_in=counts.rows_in,
            results=results,
            samples=dq.sample_keys(plan.checked, spec.keys, breached, line_column="_line_number"),
        )
    dq.raise_if_breached(spec.name, rows_in=counts.rows_in, results=results, samples={}, enforce=False)
    out = plan.output_counts(row)
    if out is not None and plan.out_checked is not None:
        results = [*results, *out.results]
        if any(r.breached for r in out.results):  # integrity (keys, versions): always enforced
            record(results, written=0, superseded=0)
            dq.raise_if_breached(
                spec.name,
                rows_in=out.rows_in,
                results=out.results,
                samples=dq.sample_keys(plan.out_checked, spec.keys, out.results, line_column="_line_number"),
            )
    written, superseded = plan.written_and_superseded(row)
    if counts.rows_in != written + counts.quarantined + superseded:
        record(results, written=written, superseded=superseded)
        raise ConservationError(
            f"silver {spec.name} batch {run_date}: {counts.rows_in} bronze rows but {written} in silver + "
            f"{counts.quarantined} quarantined + {superseded} superseded; nothing was written."
        )
    record(results, written=written, superseded=superseded)
    writes.append(
        functools.partial(
            store.replace_slice,
            plan.rejected,
            store.ref("silver", spec.name + QUARANTINE_SUFFIX),
            where=batch_predicate(run_date),
            partition_by=("_batch_date",),
            known_empty=counts.quarantined == 0,
            schema=plan.rejected_schema,
            rows=counts.quarantined,
        )
    )
    if plan.merge is not None:
        merge = plan.merge
        effect = merge.effect(row) if merge.effect_query is not None else None
        writes.append(functools.partial(store.execute_merge, merge, effect, schema=plan.source_schema))
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


def _written_and_superseded(
    good: DataFrame, *, planned: DataFrame, spec: SilverTable, where: str, prefix: str = ""
) -> DataFrame:
    """One row, from the planned final rows of the batch's keys: ``written``, rows of the batch that
    will be in the table, and ``superseded``, rows of the batch that passed the checks but whose
    key will hold another (more recent) version (columns named after ``prefix``).

    A row whose key is not planned at all is *not* counted as superseded: it would go missing, and
    the conservation check must catch it.
    """
    written = planned.filter(where).select(F.lit(1).alias("_written"), F.lit(0).alias("_superseded"))
    winners = planned.select(*spec.keys, *[F.col(c).alias(f"_w{c}") for c in LINEAGE])
    joined = good.select(*spec.keys, *LINEAGE).join(winners, list(spec.keys), "inner")
    lost = joined.filter(
        (F.col("_w_batch_date") != F.col("_batch_date")) | (F.col("_w_line_number") != F.col("_line_number"))
    ).select(F.lit(0).alias("_written"), F.lit(1).alias("_superseded"))
    return written.unionByName(lost).agg(
        F.coalesce(F.sum("_written"), F.lit(0)).alias(f"{prefix}written"),
        F.coalesce(F.sum("_superseded"), F.lit(0)).alias(f"{prefix}superseded"),
    )


def _earlier_rows(
    bronze: DataFrame, spec: SilverTable, expectations: tuple[dq.Expectation, ...], *, where: str, keys: DataFrame
) -> DataFrame:
    """The good rows of every other batch for ``keys``, cleaned and checked as their own batch was
    (cleaning reads each row's ``_batch_date``), the latest per key: what those keys fall back to."""
    others = bronze.filter(~F.expr(where)).transform(spec.clean)
    checked = others.join(keys, list(spec.keys), "left_semi").transform(dq.check(expectations))
    good = checked.filter(~dq.is_quarantined()).transform(dq.drop_checks(expectations)).drop(RAW)
    rows = good.transform(latest_per_key(keys=spec.keys, recency=spec.recency))
    return rows.withColumn("prd_end_dt", F.lit(None).cast("date")) if spec.versioned else rows


def run_silver(
    spark: SparkSession, settings: Settings, run_date: date, *, tables: Iterable[str] | None = None
) -> list[SilverTableResult]:
    """Run the layer's batch: every table is planned, the checks of all of them are fetched in one
    query, every table is checked, and only then is anything written (a failed check leaves the
    layer as it was)."""
    store = TableStore(spark, settings)
    recorded_at = datetime.now(UTC)
    results: list[SilverTableResult] = []
    metrics: list[tuple[object, ...]] = []
    names = list(tables or SILVER_TABLES)
    written = [store.ref("silver", n + suffix) for n in names for suffix in ("", QUARANTINE_SUFFIX)]
    # One writer of the layer's tables from the first read to the last commit (see TableStore).
    with store.writing([*written, store.ref("silver", METRICS_TABLE)]):
        try:
            # The batches' checked rows (their schemas asked once for all tables), then the planned
            # rows, then ONE query of every table's checks, which also brings the schemas of
            # everything the layer writes (checked before anything is written).
            batches = [_batch(store, SILVER_TABLES[n], run_date, prefix=f"t{i}_") for i, n in enumerate(names)]
            checked_schemas = schemas_of([b.checked for b in batches])
            planned = [
                _plan(store, b, materialize(b.checked, small=True), schema, run_date)
                for b, schema in zip(batches, checked_schemas, strict=True)
            ]
            plans = [_table_plan(store, p, run_date=run_date) for p in planned]
            row, schemas = fetch_one(
                functools.reduce(DataFrame.crossJoin, [p.query for p in plans]),
                probes=[df for p in plans for df in (p.rejected, p.source)],
            )
            for plan, rejected_schema, source_schema in zip(plans, schemas[::2], schemas[1::2], strict=True):
                plan.rejected_schema, plan.source_schema = rejected_schema, source_schema
                store.check_schema(store.ref("silver", plan.spec.name + QUARANTINE_SUFFIX), rejected_schema)
                # A table with nothing to merge is not written: its planned rows (none) have the
                # batch's types, where the engine's join would have widened them to the table's.
                if plan.merge is not None:
                    store.check_schema(store.ref("silver", plan.spec.name), source_schema)
            writes: list[Callable[[], None]] = []
            for plan in plans:
                results.append(
                    _decide(
                        plan,
                        row,
                        store=store,
                        run_date=run_date,
                        metrics=metrics,
                        recorded_at=recorded_at,
                        writes=writes,
                    )
                )
            for write in writes:
                write()
        finally:
            write_metrics(store, layer="silver", run_date=run_date, rows=metrics)
    return results
