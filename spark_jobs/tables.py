"""Reading and writing Delta tables by logical name, with the schema check Sail does not do.

Writes are idempotent per slice: ``replace_slice`` overwrites exactly the rows matching a predicate
(Delta ``replaceWhere``), so re-running a batch replaces that batch and touches nothing else.

One writer per table, enforced here and not only by the scheduler: a local table is written under
its lock file (``table_locks``), held from the read that decides how to write to the commit, so
the cheap blind appends stay safe; a catalog table (Databricks) is never blind-appended to: every
write is a ``replaceWhere`` over its slice or a ``MERGE``, which read what they replace, so Delta's
optimistic concurrency fails the second of two concurrent writers (``ConcurrentAppendException``)
instead of letting both add the same rows; a re-run then converges.
"""

from __future__ import annotations

import json
import logging
import operator
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from spark_jobs import table_locks
from spark_jobs.engine import materialize, supports_delta
from spark_jobs.errors import EngineUnavailableError, SchemaMismatchError, TableNotFoundError
from spark_jobs.settings import Settings, TableRef

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)


def batch_predicate(batch_date: date, column: str = "_batch_date") -> str:
    """SQL predicate selecting one batch: the slice every layer replaces or reads per run."""
    return f"{column} = DATE'{batch_date.isoformat()}'"


def schema_differences(expected: StructType, actual: StructType) -> list[str]:
    """Human-readable differences between two schemas (names case-insensitive, nullability ignored)."""
    exp = {f.name.lower(): f.dataType for f in expected.fields}
    act = {f.name.lower(): f.dataType for f in actual.fields}
    problems = []
    missing = [n for n in exp if n not in act]
    extra = [n for n in act if n not in exp]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    for name in exp:
        if name in act and exp[name] != act[name]:
            problems.append(f"column {name!r} is {act[name].simpleString()}, table has {exp[name].simpleString()}")
    return problems


def assert_schema(df: DataFrame, expected: StructType, *, what: str) -> None:
    """Raise :class:`SchemaMismatchError` naming ``what`` if ``df`` does not match ``expected``."""
    problems = schema_differences(expected, df.schema)
    if problems:
        raise SchemaMismatchError(f"schema mismatch for {what}: " + "; ".join(problems))


@dataclass(frozen=True)
class MergeEffect:
    """What ``MERGE INTO stored USING source`` would do (see :func:`merge_effect`)."""

    inserts: int  # source rows whose key is not stored
    matched: int  # source rows whose key is stored
    updates: int  # matched rows that would change the stored row
    # Values of the slice column in the rows the MERGE would write (inserted or changed) and in the
    # stored rows it would change or delete; None when there is no slice column or a value is NULL.
    slices: tuple[date, ...] | None = None
    deletes: int = 0  # stored rows whose key is in ``deletes``

    @property
    def rewrites(self) -> bool:
        """Whether a stored row would change or go (else the MERGE could only insert)."""
        return bool(self.updates or self.deletes)


DELETE = "_delete"  # flag column of a merge source: the key's stored row is deleted


def flagged_source(source: DataFrame, deletes: DataFrame | None, keys: tuple[str, ...]) -> DataFrame:
    """``source`` plus the ``deletes`` keys, with a :data:`DELETE` flag saying which is which."""
    upserts = source.withColumn(DELETE, F.lit(False))
    if deletes is None:
        return upserts
    types = {f.name: f.dataType for f in source.schema.fields}
    removed = deletes.select(
        *[
            F.col(c).cast(types[c]).alias(c) if c in keys else F.lit(None).cast(types[c]).alias(c)
            for c in source.columns
        ],
        F.lit(True).alias(DELETE),
    )
    return upserts.unionByName(removed)


def _classified(
    source: DataFrame, stored: DataFrame, *, keys: tuple[str, ...], update_when: str | None
) -> tuple[DataFrame, Column, Column, Column]:
    """A :func:`flagged_source` (alias ``s``) left-joined to ``stored`` (alias ``t``) on ``keys``, with
    the conditions "new key", "matched and would change" (``update_when`` holds and a column
    differs, NULL-safe) and "matched and deleted"."""
    s, t = source.alias("s"), stored.withColumn("_stored", F.lit(True)).alias("t")
    on = reduce(operator.and_, [F.col(f"s.{k}") == F.col(f"t.{k}") for k in keys])
    columns = [c for c in source.columns if c != DELETE]
    differs = reduce(operator.or_, [~F.col(f"s.{c}").eqNullSafe(F.col(f"t.{c}")) for c in columns])
    stored_row, delete = F.col("t._stored").isNotNull(), F.col(f"s.{DELETE}")
    changed = stored_row & ~delete & (F.expr(update_when) & differs if update_when else differs)
    return s.join(t, on, "left"), ~stored_row & ~delete, changed, stored_row & delete


def merge_effect(
    source: DataFrame,
    stored: DataFrame,
    *,
    keys: tuple[str, ...],
    update_when: str | None,
    slice_column: str | None = None,
    deletes: DataFrame | None = None,
) -> MergeEffect:
    """What ``MERGE INTO stored USING source`` would do, in one query. A matched row counts as
    changed only if ``update_when`` (aliases ``s``, ``t``) holds and some column differs, so
    re-merging rows already in the table counts nothing. ``deletes``: keys whose stored row the
    MERGE deletes."""
    flagged = source if DELETE in source.columns else flagged_source(source, deletes, keys)
    joined, new, changed, removed = _classified(flagged, stored, keys=keys, update_when=update_when)
    upsert = ~F.col(f"s.{DELETE}")
    aggs = [
        F.count_if(new).alias("inserts"),
        F.count_if(upsert & ~new).alias("matched"),
        F.count_if(changed).alias("updates"),
        F.count_if(removed).alias("deletes"),
    ]
    if slice_column:
        s_slice, t_slice = F.col(f"s.{slice_column}"), F.col(f"t.{slice_column}")
        written, rewritten = new | changed, changed | removed
        aggs += [
            F.array_union(F.collect_set(F.when(written, s_slice)), F.collect_set(F.when(rewritten, t_slice))).alias(
                "slices"
            ),
            F.count_if((written & s_slice.isNull()) | (rewritten & t_slice.isNull())).alias("null_slices"),
        ]
    row = joined.agg(*aggs).first()
    assert row is not None
    slices = None
    if slice_column and not row["null_slices"]:
        slices = tuple(sorted(row["slices"]))
    return MergeEffect(int(row["inserts"]), int(row["matched"]), int(row["updates"]), slices, int(row["deletes"]))


@dataclass
class TableStore:
    spark: SparkSession
    settings: Settings
    # A scan of many small files costs 2-4x one of a single file on the embedded engine (measured on
    # 30 daily appends); merged tables above this many files are compacted (see ``compact``).
    compact_above_files: int = 16
    # Sail writes no Delta checkpoints, so every read of a local table would replay all its commits
    # (one JSON file per daily write: a first read of a 300-commit table 27 ms instead of 12 ms); a
    # checkpoint every this many commits bounds that. Not Delta Spark's 10 (deltalake's default):
    # Sail 0.7 cannot time-travel to most versions older than a checkpoint ("Missing commit file"),
    # so checkpoints are kept rare; the deltalake package reads every version.
    checkpoint_every: int = 100
    # How long a writer waits for another writer of the same local table before giving up.
    lock_timeout_seconds: float = 3600.0

    @contextmanager
    def writing(self, tables: Iterable[TableRef]) -> Iterator[None]:
        """Be the only writer of the local ``tables`` (wait for another writer to finish); a job holds
        this from its first read to its last commit. Catalog tables: nothing to take (see module)."""
        paths = [t.path for t in tables if t.path is not None]
        with table_locks.exclusive(paths, timeout_seconds=self.lock_timeout_seconds):
            yield

    def ref(self, layer: str, name: str) -> TableRef:
        return self.settings.table(layer, name)

    def exists(self, table: TableRef) -> bool:
        if table.full_name is not None:
            return bool(self.spark.catalog.tableExists(table.full_name))
        assert table.path is not None
        log_dir = os.path.join(table.path, "_delta_log")
        return os.path.isdir(log_dir) and any(f.endswith(".json") for f in os.listdir(log_dir))

    def read(self, table: TableRef) -> DataFrame:
        self._require_delta()
        if table.full_name is not None:
            return self.spark.table(table.full_name)
        if not self.exists(table):
            raise TableNotFoundError(f"table {table} does not exist yet: run the layer that writes it first")
        return self.spark.read.format("delta").load(table.path)

    def replace_slice(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        where: str,
        partition_by: tuple[str, ...] = (),
        known_empty: bool = False,
    ) -> None:
        """Overwrite the rows of ``table`` matching ``where`` with ``df`` (create the table if new).

        ``df`` must have exactly the table's schema: Sail silently casts or drops columns on write,
        so the check happens here, before anything is written. ``known_empty``: the caller knows
        ``df`` has no rows, so the write is skipped when the slice is already empty. A slice that is
        still empty (a new batch) is appended to, which costs a third of a ``replaceWhere`` on a
        table with history.
        """
        self._require_delta()
        with self.writing([table]):
            if not self.exists(table):
                log.info("creating table %s", table)
                writer = df.write.format("delta").mode("overwrite")
                if partition_by:
                    writer = writer.partitionBy(*partition_by)
            else:
                schema, slice_empty = self._stored_state(table, where)
                if slice_empty and known_empty:
                    return
                assert_schema(df, schema, what=f"table {table}")
                # An empty slice (a new batch) has nothing to replace: a plain append is cheaper, and
                # safe under the table's lock. A catalog table gets the replaceWhere: it conflicts
                # with a concurrent writer of the slice, where two appends would both commit.
                writer = df.write.format("delta")
                if slice_empty and table.path is not None:
                    writer = writer.mode("append")
                else:
                    writer = writer.mode("overwrite").option("replaceWhere", where)
            self._save(writer, table)

    def merge(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: tuple[str, ...],
        update_when: str | None = None,
        partition_by: tuple[str, ...] = (),
        slice_column: str | None = None,
        deletes: DataFrame | None = None,
    ) -> None:
        """Upsert ``df`` into ``table`` on ``keys`` with SQL ``MERGE INTO`` (create the table if new),
        and delete the stored rows of the ``deletes`` keys (a DataFrame of ``keys`` columns).

        ``update_when`` is an extra SQL condition (aliases ``t`` = table, ``s`` = ``df``) for replacing
        a matched row, e.g. "the incoming version is newer". ``df`` must have one row per key, and
        no key of ``deletes``.

        Fast path: when no matched row would change or go (none matches, or every match is
        identical to the stored row or fails ``update_when``), the MERGE could only insert, so the
        new keys are appended instead: same result, while a MERGE on the embedded engine joins the
        whole table and costs ~0.1 s even for a single changed row. ``slice_column`` (a DATE column
        such as ``_batch_date``): when rows do change, only the slices holding them (values of the
        column in the rows written and in the stored rows changed or deleted) are rewritten with
        ``replaceWhere``, at about half the cost of the MERGE, with the same result. The append is
        taken on local tables only (under their lock); a catalog table gets the ``MERGE``, whose
        read of the table makes a concurrent writer's commit a conflict instead of a duplicate.
        """
        self._require_delta()
        with self.writing([table]):
            self._merge(
                df,
                table,
                keys=keys,
                update_when=update_when,
                partition_by=partition_by,
                slice_column=slice_column,
                deletes=deletes,
            )

    def _merge(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: tuple[str, ...],
        update_when: str | None,
        partition_by: tuple[str, ...],
        slice_column: str | None,
        deletes: DataFrame | None,
    ) -> None:
        if not self.exists(table):
            self.replace_slice(df, table, where="true", partition_by=partition_by)
            return
        stored = self.read(table)
        assert_schema(df, self._stored_state(table)[0], what=f"table {table}")
        source = flagged_source(df, deletes, keys)
        effect = merge_effect(source, stored, keys=keys, update_when=update_when, slice_column=slice_column)
        log.info("merge into %s: %s", table, effect)
        if not effect.rewrites and (table.path is not None or not effect.inserts):
            if effect.inserts:
                new_rows = df.join(stored.select(*keys), list(keys), "left_anti") if effect.matched else df
                self._save(new_rows.write.format("delta").mode("append"), table)
                self.compact(table)
            return
        if slice_column and effect.slices:
            # Every row the MERGE would remove or add lies in these slices: rewrite just them.
            where = " OR ".join(batch_predicate(d, slice_column) for d in effect.slices)
            joined, new, changed, removed = _classified(source, stored, keys=keys, update_when=update_when)
            written = joined.filter(new | changed).select(*[F.col(f"s.{c}").alias(c) for c in df.columns])
            gone = joined.filter(new | changed | removed).select(*[F.col(f"s.{k}").alias(k) for k in keys])
            kept = stored.filter(where).join(gone, list(keys), "left_anti")
            rows = materialize(kept.unionByName(written))  # read fully before the slices are replaced
            self._save(rows.write.format("delta").mode("overwrite").option("replaceWhere", where), table)
            self.compact(table)
            return
        view = f"_merge_source_{table.layer}_{table.name}"
        source.createOrReplaceTempView(view)
        try:
            on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
            update = f"WHEN MATCHED AND ({update_when})" if update_when else "WHEN MATCHED"
            columns = ", ".join(f"`{c}`" for c in df.columns)
            values = ", ".join(f"s.`{c}`" for c in df.columns)
            assignments = ", ".join(f"t.`{c}` = s.`{c}`" for c in df.columns)
            actions = (
                f"WHEN MATCHED AND s.{DELETE} THEN DELETE {update} THEN UPDATE SET {assignments} "
                f"WHEN NOT MATCHED AND NOT s.{DELETE} THEN INSERT ({columns}) VALUES ({values})"
            )
            self.spark.sql(f"MERGE INTO {table.sql} t USING {view} s ON {on} {actions}")
        finally:
            self.spark.catalog.dropTempView(view)
        self.compact(table)

    def compact(self, table: TableRef) -> bool:
        """Bin-pack the small data files of a local table of more than ``compact_above_files`` files
        into larger ones (same rows, one ``OPTIMIZE`` commit without data change); return whether it
        did.

        Every daily append or MERGE adds files, and Sail has no ``OPTIMIZE``: the ``deltalake``
        package does it in this process, without a round trip through the engine (a third of the
        time of reading the table and overwriting it). Catalog tables are left to Databricks (auto
        compaction).
        """
        if table.path is None:
            return False
        from deltalake import DeltaTable

        delta = DeltaTable(table.path)
        files = len(delta.file_uris())
        if files <= self.compact_above_files:
            return False
        metrics = delta.optimize.compact()
        log.info("compacted %s: %d files into %d", table, metrics["numFilesRemoved"], metrics["numFilesAdded"])
        return bool(metrics["numFilesRemoved"])

    def slice_is_empty(self, table: TableRef, where: str) -> bool:
        """Whether no row of the existing ``table`` matches ``where`` (from the Delta log locally)."""
        return self._stored_state(table, where)[1]

    def _stored_state(self, table: TableRef, where: str | None = None) -> tuple[StructType, bool]:
        """The schema of an existing table and whether no row matches ``where`` (None: not asked).

        A local table answers from its Delta log in this process (``deltalake``: the schema, and the
        predicate on the files it cannot prune), which saves two engine round trips per write.
        """
        if table.path is None:
            stored = self.read(table)
            return stored.schema, where is not None and stored.filter(where).limit(1).count() == 0
        from deltalake import DeltaTable, QueryBuilder
        from pyspark.sql.types import StructType

        delta = DeltaTable(table.path)
        schema = StructType.fromJson(json.loads(delta.schema().to_json()))
        if where is None:
            return schema, False
        matching = QueryBuilder().register("t", delta).execute(f"SELECT 1 AS one FROM t WHERE {where} LIMIT 1")
        return schema, matching.read_all().num_rows == 0

    def _save(self, writer: DataFrameWriter, table: TableRef) -> None:
        if table.full_name is not None:
            writer.saveAsTable(table.full_name)
        else:
            writer.save(table.path)
            self.checkpoint_if_due(table)

    def checkpoint_if_due(self, table: TableRef) -> bool:
        """Write a Delta checkpoint of a local table when ``checkpoint_every`` commits have been made
        since the last one; return whether it did. Decided from a listing of ``_delta_log``, so the
        usual case costs no log read. Catalog tables checkpoint themselves."""
        if table.path is None:
            return False
        log_dir = os.path.join(table.path, "_delta_log")
        versions = [int(name[:-5]) for name in os.listdir(log_dir) if name.endswith(".json") and name[:-5].isdigit()]
        last = 0  # the first commit creates the table: the first checkpoint comes N commits after it
        try:
            with open(os.path.join(log_dir, "_last_checkpoint")) as fh:
                last = int(json.load(fh)["version"])
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if not versions or max(versions) - last < self.checkpoint_every:
            return False
        from deltalake import DeltaTable

        DeltaTable(table.path).create_checkpoint()
        return True

    def _require_delta(self) -> None:
        if not supports_delta(self.spark):
            raise EngineUnavailableError(
                "Delta Lake is not available in this classic Spark session (its jars cannot be "
                "downloaded here). Set LAKEHOUSE_DELTA_JARS to a folder with the delta-spark and "
                "delta-storage jars, or use LAKEHOUSE_ENGINE=sail."
            )
