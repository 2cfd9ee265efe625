"""Reading and writing Delta tables by logical name, with the schema check Sail does not do.

Writes are idempotent per slice: ``replace_slice`` overwrites exactly the rows matching a predicate
(Delta ``replaceWhere``), so re-running a batch replaces that batch and touches nothing else.
``merge`` upserts (and deletes) by key.

``TableStore`` executes writes; what to write is planned in ``write_plan`` (pure decisions), where
and how a table is stored in ``table_homes`` (local Delta folders or Unity Catalog, chosen once),
and local upkeep is in ``local_upkeep``. One writer per table is enforced here and not only by the
scheduler: a job holds ``writing`` (the local tables' locks) from the read that decides how to
write to the commit; a catalog table is never blind-appended to (see ``table_homes``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from spark_jobs import local_upkeep, table_locks
from spark_jobs.engine import fetch_one, supports_delta
from spark_jobs.errors import EngineUnavailableError, SchemaMismatchError
from spark_jobs.settings import Settings, TableRef
from spark_jobs.table_homes import TableHome, View, frame_of, home_for
from spark_jobs.write_plan import (
    DELETE,
    OTHER_PRESENT,
    MergeEffect,
    MergePath,
    SlicePath,
    changed_rows,
    classified,
    compared_effect_query,
    effect_from_row,
    effect_query,
    flagged_source,
    merge_path,
    slice_path,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)


def batch_predicate(batch_date: date, column: str = "_batch_date") -> str:
    """SQL predicate selecting one batch: the slice every layer replaces or reads per run."""
    return f"{column} = DATE'{batch_date.isoformat()}'"


def schema_differences(*, expected: StructType, actual: StructType) -> list[str]:
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


def assert_schema(*, expected: StructType, actual: StructType, what: str) -> None:
    """Raise :class:`SchemaMismatchError` naming ``what`` if ``actual`` does not match ``expected``."""
    problems = schema_differences(expected=expected, actual=actual)
    if problems:
        raise SchemaMismatchError(f"schema mismatch for {what}: " + "; ".join(problems))


@dataclass(frozen=True)
class PreparedMerge:
    """A planned :meth:`TableStore.merge` (see :meth:`TableStore.prepare_merge`)."""

    table: TableRef
    df: DataFrame
    source: DataFrame | None  # ``df`` flagged with the deletes; None: the table is new
    stored: DataFrame | None
    keys: tuple[str, ...]
    update_when: str | None
    partition_by: tuple[str, ...]
    slice_column: str | None
    effect_query: DataFrame | None  # one row (see ``write_plan.effect_query``); None: the table is new
    prefix: str
    columns: tuple[str, ...] = ()  # ``df``'s columns (known when the table exists)
    schema_checked: bool = False  # whether ``df``'s schema was checked against the table's
    # ``df`` with what writing each row does (``write_plan.compared_effect_query``), when the caller
    # computed it from a join with the table as it is: the write takes the rows that change off it
    compared: DataFrame | None = None

    def effect(self, row: Mapping[str, Any]) -> MergeEffect:
        """The effect of the merge, read from a row holding ``effect_query``'s columns."""
        return effect_from_row(row, slice_column=self.slice_column, prefix=self.prefix)


@dataclass
class TableStore:
    spark: SparkSession
    settings: Settings
    compact_above_files: int = local_upkeep.COMPACT_ABOVE_FILES
    checkpoint_every: int = local_upkeep.CHECKPOINT_EVERY
    # How long a writer waits for another writer of the same local table before giving up.
    lock_timeout_seconds: float = 3600.0
    home: TableHome = field(init=False)

    def __post_init__(self) -> None:
        self.home = home_for(
            self.spark,
            self.settings,
            compact_above_files=self.compact_above_files,
            checkpoint_every=self.checkpoint_every,
        )

    @contextmanager
    def writing(self, tables: Iterable[TableRef]) -> Iterator[None]:
        """Be the only writer of ``tables`` whose home has locks (wait for another writer to
        finish); a job holds this from its first read to its last commit."""
        tables = list(tables)
        paths = [path for path in map(self.home.lock_path, tables) if path is not None]
        with table_locks.exclusive(paths, timeout_seconds=self.lock_timeout_seconds):
            self.home.prefetch(tables)
            yield

    def ref(self, layer: str, name: str) -> TableRef:
        return self.settings.table(layer, name)

    def publish_views(self, views: Mapping[TableRef, View]) -> None:
        """Make each view queryable under its table's name (see ``TableHome.publish_views``)."""
        with self.writing(views):
            self.home.publish_views(views)

    def exists(self, table: TableRef) -> bool:
        return self.home.exists(table)

    def read(self, table: TableRef) -> DataFrame:
        self._require_delta()
        return self.home.read(table)

    def slice_is_empty(self, table: TableRef, where: str) -> bool:
        """Whether no row of the existing ``table`` matches ``where``."""
        return self.home.stored_state(table, where)[1]

    def replace_slice(
        self,
        df: DataFrame | None,
        table: TableRef,
        *,
        where: str,
        partition_by: tuple[str, ...] = (),
        known_empty: bool = False,
        schema: StructType | None = None,
        rows: int | None = None,
        arrow: pa.Table | None = None,
    ) -> None:
        """Overwrite the rows of ``table`` matching ``where`` with ``df`` (create the table if new).

        ``df`` must have exactly the table's schema: Sail silently casts or drops columns on write,
        so the check happens here, before anything is written. ``known_empty``: the caller knows
        ``df`` has no rows, so the write is skipped when the slice is already empty. A still empty
        slice (a new batch) is appended to where the table's home allows it (``slice_path``).
        ``schema``: ``df``'s schema when the caller already has it (it is checked all the same).
        ``rows``: how many rows ``df`` has, when the caller knows (a small append is then written
        in this process where the home does that: ``TableHome.append``). ``arrow``: the rows, made
        in this process (a job's own small table), with ``df`` None: a DataFrame of them is made only
        for a write through the engine, and an append in this process needs no round trip.
        """
        if df is None and (arrow is None or schema is None):
            raise ValueError("replace_slice needs a DataFrame, or Arrow rows with their schema")
        self._require_delta()
        with self.writing([table]):
            exists = self.home.exists(table)
            slice_empty = False
            if exists:
                stored, slice_empty = self.home.stored_state(table, where)
            path = slice_path(
                exists=exists, slice_empty=slice_empty, known_empty=known_empty, blind_appends=self.home.blind_appends
            )
            if path is SlicePath.SKIP:
                return
            if path is not SlicePath.CREATE:
                # asking a DataFrame for its schema is a round trip
                actual = schema if schema is not None else frame_of(self.spark, df, arrow).schema
                assert_schema(expected=stored, actual=actual, what=f"table {table}")
            if path is SlicePath.APPEND:
                self.home.append(df, table, rows=rows, arrow=arrow)
                return
            writer = frame_of(self.spark, df, arrow, schema).write.format("delta")
            if path is SlicePath.CREATE:
                log.info("creating table %s", table)
                writer = writer.mode("overwrite")
                if partition_by:
                    writer = writer.partitionBy(*partition_by)
            else:
                writer = writer.mode("overwrite").option("replaceWhere", where)
            self.home.save(writer, table)

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
        """Upsert ``df`` into ``table`` on ``keys`` (create the table if new), and delete the stored
        rows of the ``deletes`` keys (a DataFrame of ``keys`` columns), with the result of SQL
        ``MERGE INTO``.

        ``update_when`` is an extra SQL condition (aliases ``t`` = table, ``s`` = ``df``) for replacing
        a matched row, e.g. "the incoming version is newer". ``df`` must have one row per key, and
        no key of ``deletes``.

        The write itself is the cheapest with that result (``merge_path``): nothing when nothing
        changes; an append of the new keys when no stored row changes or goes (a MERGE on the
        embedded engine joins the whole table and costs ~0.1 s even for a single changed row);
        with ``slice_column`` (a DATE column such as ``_batch_date``), a ``replaceWhere`` of just
        the slices holding the rows that change, at about half the cost of the MERGE; else, where
        the home says an overwrite costs less (``whole_rewrites``: locally), the whole table
        overwritten with the merged rows; else the MERGE.
        """
        with self.writing([table]):
            prepared = self.prepare_merge(
                df,
                table,
                keys=keys,
                update_when=update_when,
                partition_by=partition_by,
                slice_column=slice_column,
                deletes=deletes,
            )
            effect = None
            if prepared.effect_query is not None:
                effect = prepared.effect(fetch_one(prepared.effect_query)[0])
            self.execute_merge(prepared, effect)

    def prepare_merge(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: tuple[str, ...],
        update_when: str | None = None,
        partition_by: tuple[str, ...] = (),
        slice_column: str | None = None,
        deletes: DataFrame | None = None,
        prefix: str = "",
        columns: Sequence[str] | None = None,
        compared: DataFrame | None = None,
    ) -> PreparedMerge:
        """Plan the :meth:`merge`, without running it: the plan's ``effect_query`` (None for a new
        table) is one row, with columns named after ``prefix``, that a caller may fetch together with
        other one-row queries, then hand the :class:`MergeEffect` read from it to
        :meth:`execute_merge`. The caller holds :meth:`writing` from here to the execution, so that
        the effect still holds when the write is made.

        ``columns``: ``df``'s columns when the caller knows them; its schema is then checked against
        the table's by :meth:`execute_merge` (with the schema the caller fetched, see
        ``engine.fetch_one``), else it is asked of the engine and checked here. ``compared``: ``df``
        with the columns saying what writing each row does, when the caller computed ``df`` from a
        join with the table as it is now (``silver.transforms.newest_per_key`` with ``compare_on``
        the ``slice_column``; no ``deletes``): the effect and the rows to write are read off it
        (``write_plan.compared_effect_query``, ``write_plan.changed_rows``), else ``df`` is joined
        to the table for each."""
        self._require_delta()
        if not self.home.exists(table):
            return PreparedMerge(table, df, None, None, keys, update_when, partition_by, slice_column, None, prefix)
        stored = self.home.read(table)
        schema = None
        if columns is None:
            schema = df.schema
            self.check_schema(table, schema)
            columns = schema.fieldNames()
        source = flagged_source(df, deletes, keys, schema=schema)
        if compared is not None:
            if slice_column is None or deletes is not None:
                raise ValueError("a compared merge source needs its slice column and no deletes")
            query = compared_effect_query(compared, slice_column=slice_column, prefix=prefix)
        else:
            query = effect_query(
                source,
                stored=stored,
                keys=keys,
                update_when=update_when,
                columns=columns,
                slice_column=slice_column,
                prefix=prefix,
            )
        return PreparedMerge(
            table,
            df,
            source,
            stored,
            keys,
            update_when,
            partition_by,
            slice_column,
            query,
            prefix,
            tuple(columns),
            schema is not None,
            compared,
        )

    def stored_schema(self, table: TableRef) -> StructType | None:
        """The schema of ``table`` (None: no such table yet), from its home (locally the Delta log:
        no engine round trip)."""
        return self.home.stored_state(table)[0] if self.home.exists(table) else None

    def check_schema(self, table: TableRef, actual: StructType) -> None:
        """Raise :class:`SchemaMismatchError` if ``actual`` (a DataFrame's schema) does not match the
        existing ``table``'s (nothing to check for a new table); read from the table's home, no
        engine round trip locally."""
        stored = self.stored_schema(table)
        if stored is not None:
            assert_schema(expected=stored, actual=actual, what=f"table {table}")

    def execute_merge(
        self, prepared: PreparedMerge, effect: MergeEffect | None, *, schema: StructType | None = None
    ) -> None:
        """Write a :meth:`prepare_merge` plan whose effect is ``effect`` (None: the table is new).
        ``schema``: the plan's ``df``'s, which the caller fetched and checked against the table
        (:meth:`check_schema`, before any write of its layer); None: it is checked here, unless
        :meth:`prepare_merge` did (on Unity Catalog each check reads the table's schema: a round trip)."""
        p = prepared
        with self.writing([p.table]):
            if p.source is None or p.stored is None:
                self.replace_slice(p.df, p.table, where="true", partition_by=p.partition_by, schema=schema)
                return
            assert effect is not None
            if schema is None and not p.schema_checked:
                self.check_schema(p.table, p.df.schema)
            whole = self.home.whole_rewrites and not p.partition_by
            # Asked only of a merge that changes stored rows (else it appends or does nothing), of
            # the source rows it reads: at most the keys it inserts, matches or deletes.
            size = effect.inserts + effect.matched + effect.deletes
            in_process = effect.rewrites and p.update_when is None and self.home.merges_rows(p.table, size)
            share = None
            if whole and p.slice_column and effect.slices and effect.rewrites and not in_process:
                share = self.home.slices_share(p.table, p.slice_column, effect.slices)
            path = merge_path(
                effect,
                blind_appends=self.home.blind_appends,
                slice_column=p.slice_column,
                whole_rewrites=whole,
                slices_share=share,
                in_process=in_process,
            )
            log.info("merge into %s: %s (slices' share %s) -> %s", p.table, effect, share, path)
            if path is MergePath.NOTHING:
                return
            if path is MergePath.APPEND:
                if p.compared is not None:
                    new_rows = p.compared.filter(~F.col(OTHER_PRESENT)).select(*p.columns)
                elif effect.matched:
                    new_rows = p.df.join(p.stored.select(*p.keys), list(p.keys), "left_anti")
                else:
                    new_rows = p.df
                self.home.append(new_rows, p.table, rows=effect.inserts)
            elif path is MergePath.SLICES:
                assert effect.slices and p.slice_column
                self._rewrite(p, where=" OR ".join(batch_predicate(d, p.slice_column) for d in effect.slices))
            elif path is MergePath.REWRITE:
                self._rewrite(p, where=None)
            elif path is MergePath.ROWS:
                self._merge_rows(p, effect)
            else:
                self._merge_into(p.source, p.table, keys=p.keys, update_when=p.update_when, columns=p.columns)
            self.home.after_rewrite(p.table)

    def _rewrite(self, p: PreparedMerge, *, where: str | None) -> None:
        """Every row the MERGE would remove or add lies in the rows matching ``where`` (None: the
        whole table): replace just them with what the MERGE would leave there."""
        assert p.source is not None and p.stored is not None
        keys = list(p.keys)
        inside = p.stored if where is None else p.stored.filter(where)
        if where is None and p.update_when is None:
            # Every stored row of a source key ends as its source row (an unchanged one is the same
            # row) or goes: the rows need not be told apart, so the source is not joined to the table.
            written = p.source.filter(~F.col(DELETE)).select(*p.columns)
            kept = inside.join(p.source.select(*keys), keys, "left_anti")
        elif p.compared is not None:  # the rows that change, read off the join that planned them
            written = changed_rows(p.compared).select(*p.columns)
            kept = inside.join(written.select(*keys), keys, "left_anti")
        else:
            # Only the rows that change are written: an unchanged source row's stored row may lie
            # outside the slices, or ``update_when`` may keep the stored row.
            joined, new, changed, removed = classified(
                p.source, stored=p.stored, keys=p.keys, update_when=p.update_when, columns=p.columns
            )
            written = joined.filter(new | changed).select(*[F.col(f"s.{c}").alias(c) for c in p.columns])
            gone = joined.filter(new | changed | removed).select(*[F.col(f"s.{k}").alias(k) for k in keys])
            kept = inside.join(gone, keys, "left_anti")
        # One query: the write reads the table as of the version it replaces (Delta's snapshot
        # isolation, on Sail as on Databricks), so nothing needs computing before it.
        writer = kept.unionByName(written).write.format("delta").mode("overwrite")
        self.home.save(writer if where is None else writer.option("replaceWhere", where), p.table)

    def _merge_rows(self, p: PreparedMerge, effect: MergeEffect) -> None:
        """Have the table's home merge the source in (``TableHome.merge_rows``): of a compared
        source, just the rows that change, which lie in the effect's slices with the stored rows
        they replace; else the whole source, with its deletes."""
        assert p.source is not None
        if p.compared is not None:
            within = (p.slice_column, effect.slices) if p.slice_column and effect.slices else None
            rows = changed_rows(p.compared).select(*p.columns)
            self.home.merge_rows(rows, p.table, keys=p.keys, within=within)
        else:
            self.home.merge_rows(p.source.select(*p.columns, DELETE), p.table, keys=p.keys, deleted=DELETE)

    def _merge_into(
        self,
        source: DataFrame,
        table: TableRef,
        *,
        keys: tuple[str, ...],
        update_when: str | None,
        columns: Sequence[str],
    ) -> None:
        view = f"_merge_source_{table.layer}_{table.name}"
        source.createOrReplaceTempView(view)
        try:
            on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
            update = f"WHEN MATCHED AND ({update_when})" if update_when else "WHEN MATCHED"
            names = ", ".join(f"`{c}`" for c in columns)
            values = ", ".join(f"s.`{c}`" for c in columns)
            assignments = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)
            actions = (
                f"WHEN MATCHED AND s.{DELETE} THEN DELETE {update} THEN UPDATE SET {assignments} "
                f"WHEN NOT MATCHED AND NOT s.{DELETE} THEN INSERT ({names}) VALUES ({values})"
            )
            self.spark.sql(f"MERGE INTO {table.sql} t USING {view} s ON {on} {actions}")
        finally:
            self.spark.catalog.dropTempView(view)

    def _require_delta(self) -> None:
        if not supports_delta(self.spark):
            raise EngineUnavailableError(
                "Delta Lake is not available in this classic Spark session (its jars cannot be "
                "downloaded here). Set LAKEHOUSE_DELTA_JARS to a folder with the delta-spark and "
                "delta-storage jars, or use LAKEHOUSE_ENGINE=sail."
            )
