"""Where tables live: local Delta folders or Unity Catalog, behind one small interface.

``TableStore`` talks to a :class:`TableHome` chosen once from the settings (``home_for``) and never
asks which kind it has. The two differ in how a table is found, read and saved, who answers
questions about its state (the local Delta log in this process, or the engine), who does its upkeep
and whether a write may append without reading the table:

* a local table is written under its lock file (``table_locks``), so an append decided from a read
  of its log is safe: it may be blind-appended to;
* a catalog table (Databricks) has no lock to take: every write is a ``replaceWhere`` over its slice
  or a ``MERGE``, which read what they replace, so Delta's optimistic concurrency fails the second
  of two concurrent writers (``ConcurrentAppendException``) instead of letting both add the same
  rows; a re-run then converges.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from spark_jobs import local_upkeep, table_locks
from spark_jobs.engine import fetch_arrow
from spark_jobs.errors import TableNotFoundError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import date

    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.types import StructType

    from spark_jobs.settings import Settings, TableRef


@dataclass(frozen=True)
class View:
    """A view's SQL and the tables it reads."""

    sql: str
    inputs: tuple[TableRef, ...]


# The commit info key under which a local view's table records what its rows were computed from.
VIEW_STAMP = "lakehouse.view_of"


class TableHome(Protocol):
    # Whether a write that only adds rows may append without reading the table (see the module).
    blind_appends: bool
    # Whether a merge that changes stored rows is cheaper as an overwrite of the whole table with
    # the merged rows than as a MERGE INTO (and, when its slices' files hold most of the table's
    # rows, than as a rewrite of those slices: see ``write_plan.merge_path``).
    whole_rewrites: bool

    def merges_rows(self, table: TableRef, rows: int) -> bool:
        """Whether the home merges a source of ``rows`` rows into the existing table itself, in
        this process (``merge_rows``), at less than a write through the engine."""

    def lock_path(self, table: TableRef) -> str | None:
        """The path of the table's writer lock, if its home has locks."""

    def prefetch(self, tables: Iterable[TableRef]) -> None:
        """Start reading what the home will be asked of ``tables`` (held by this process), in the
        background, while the engine works."""

    def exists(self, table: TableRef) -> bool: ...

    def read(self, table: TableRef) -> DataFrame: ...

    def stored_state(self, table: TableRef, where: str | None = None) -> tuple[StructType, bool]:
        """The schema of the existing table and whether no row matches ``where`` (None: not asked)."""

    def save(self, writer: DataFrameWriter, table: TableRef) -> None:
        """Commit ``writer`` to the table (and do the upkeep a commit makes due)."""

    def append(
        self, df: DataFrame | None, table: TableRef, *, rows: int | None = None, arrow: pa.Table | None = None
    ) -> None:
        """Add ``df``'s rows to the existing table (``rows``: how many, when the caller knows;
        ``arrow``: the rows, made in this process, with ``df`` None: a home that writes through the
        engine makes a DataFrame of them)."""

    def merge_rows(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: Sequence[str],
        deleted: str | None = None,
        within: tuple[str, Sequence[date]] | None = None,
    ) -> None:
        """Merge ``df``'s rows into the existing table in this process (see ``merges_rows``),
        with the result of SQL ``MERGE`` on ``keys`` (``local_upkeep.merge_arrow``: ``deleted``, a
        flag column of keys to delete; ``within``, what every stored row that changes holds)."""

    def after_rewrite(self, table: TableRef) -> None:
        """Upkeep after a write that added files to a table with history (compaction)."""

    def slices_share(self, table: TableRef, column: str, values: Sequence[date]) -> float | None:
        """The share of the table's rows in the files that may hold a row whose ``column`` is one
        of ``values`` (what a ``replaceWhere`` of those slices rewrites); None: not known."""

    def publish_views(self, views: Mapping[TableRef, View]) -> None:
        """Make each view queryable under its table's name, over its inputs as they are now."""


@dataclass
class LocalDeltaHome:
    """Delta folders under ``LAKEHOUSE_ROOT``: locks, log reads and upkeep in this process.

    A table's log is read once per hold of its lock (``table_locks.hold_id``), then only its new
    commits (this job's own, by whatever path: the only ones while the lock is held) at each later
    question: a job asks a table's state several times (the slice, the schema before the layer's
    writes, the write itself), and a full read of a log costs ~3 ms plus ~0.3 ms per commit since the
    last checkpoint, an update ~1.5 ms, which is made only when the next commit's file exists
    (``local_upkeep.has_commit_after``). Without the lock, every question reads the log again.

    A job that takes its tables' locks has their logs read at once in background threads
    (``prefetch``; ``deltalake`` reads without the GIL), while the engine runs its first queries: a
    daily run on top of 30 days reads ~25 logs, ~5 ms each.
    """

    spark: SparkSession
    compact_above_files: int = local_upkeep.COMPACT_ABOVE_FILES
    checkpoint_every: int = local_upkeep.CHECKPOINT_EVERY
    blind_appends: bool = True
    # The embedded engine's MERGE joins and rewrites the whole table, at 2-3x an overwrite with the
    # same rows (one changed row and 31 new ones: 0.125 s vs 0.046 s on a table of 19k rows,
    # 0.18 s vs 0.081 s on 185k), so a local table is rewritten instead, under its lock.
    whole_rewrites: bool = True
    in_process_rows: int = local_upkeep.IN_PROCESS_APPEND_ROWS
    # ``deltalake``'s MERGE of a daily batch's changed rows reads and rewrites only the files that
    # hold their keys, in this process: one changed customer and 31 new ones into 19k, 20 ms vs
    # ~50 ms for the engine's overwrite of the table; a changed sales line and 107 new ones within
    # their two slices, 20 ms vs ~50 ms for the engine's ``replaceWhere`` of the slices.
    merge_rows_limit: int = local_upkeep.IN_PROCESS_APPEND_ROWS
    _logs: dict[str, tuple[int, DeltaTable | Future[DeltaTable]]] = field(default_factory=dict, repr=False)

    def lock_path(self, table: TableRef) -> str | None:
        return _path(table)

    def merges_rows(self, table: TableRef, rows: int) -> bool:
        return rows <= self.merge_rows_limit and local_upkeep.merges_in_process(self._log(_path(table)))

    def prefetch(self, tables: Iterable[TableRef]) -> None:
        for table in tables:
            path = _path(table)
            hold = table_locks.hold_id(path)
            cached = self._logs.get(path)
            if hold is None or (cached is not None and cached[0] == hold) or not local_upkeep.has_commits(path):
                continue
            self._logs[path] = (hold, _log_readers().submit(local_upkeep.load, path))

    def exists(self, table: TableRef) -> bool:
        return local_upkeep.has_commits(_path(table))

    def read(self, table: TableRef) -> DataFrame:
        if not self.exists(table):
            raise TableNotFoundError(f"table {table} does not exist yet: run the layer that writes it first")
        return self.spark.read.format("delta").load(_path(table))

    def stored_state(self, table: TableRef, where: str | None = None) -> tuple[StructType, bool]:
        # From the Delta log in this process: saves two engine round trips per write.
        path = _path(table)
        return local_upkeep.stored_state(path, where, delta=self._log(path))

    def save(self, writer: DataFrameWriter, table: TableRef) -> None:
        path = _path(table)
        writer.save(path)
        self._after_commit(path)

    def append(
        self, df: DataFrame | None, table: TableRef, *, rows: int | None = None, arrow: pa.Table | None = None
    ) -> None:
        """A known small append (a daily batch's new rows) is fetched as Arrow and committed by
        ``deltalake`` in this process, to the table as already read under the lock: the engine's
        append reads the table's log again for its commit, ~2.5x the cost on a table with history
        (``local_upkeep.IN_PROCESS_APPEND_ROWS``). Larger or unknown ones go through the engine."""
        path = _path(table)
        if rows is None or rows > self.in_process_rows:
            self.save(frame_of(self.spark, df, arrow).write.format("delta").mode("append"), table)
            return
        data = arrow if arrow is not None else fetch_arrow(frame_of(self.spark, df, arrow))
        if data.num_rows:  # nothing to add: no commit
            local_upkeep.append_arrow(self._log(path), data)
            self._after_commit(path)

    def merge_rows(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: Sequence[str],
        deleted: str | None = None,
        within: tuple[str, Sequence[date]] | None = None,
    ) -> None:
        path = _path(table)
        metrics = local_upkeep.merge_arrow(self._log(path), fetch_arrow(df), keys=keys, deleted=deleted, within=within)
        log.info(
            "merged into %s in process: %d inserted, %d updated, %d deleted, %d files rewritten",
            table,
            metrics["num_target_rows_inserted"],
            metrics["num_target_rows_updated"],
            metrics["num_target_rows_deleted"],
            metrics["num_target_files_removed"],
        )
        self._after_commit(path)

    def after_rewrite(self, table: TableRef) -> None:
        path = _path(table)
        local_upkeep.compact(path, above_files=self.compact_above_files, delta=self._log(path))

    def slices_share(self, table: TableRef, column: str, values: Sequence[date]) -> float | None:
        path = _path(table)
        return local_upkeep.slices_share(self._log(path), column, values)

    def publish_views(self, views: Mapping[TableRef, View]) -> None:
        """No catalog holds a view here: each view's rows are stored as a Delta table of its name,
        rewritten when its SQL or one of its inputs changed since they were computed (the commit
        that wrote them records both: ``VIEW_STAMP``), else left as they are.

        The views are small aggregates and projections: the engine computes all the changed ones
        in one query (each view's rows as one list), the result comes back as Arrow and ``deltalake``
        overwrites each table in this process, at a fraction of an engine overwrite. On a day whose
        batch changes no product, the cost history is not computed again."""
        import pyarrow as pa

        # Each view to compute: its SQL, its stamp and its table (loaded; the path if there is none yet).
        stale: list[tuple[str, str, str | DeltaTable]] = []
        for ref, view in views.items():
            path = _path(ref)
            stamp = self._stamp(view)
            stored = self._log(path) if local_upkeep.has_commits(path) else None
            if stored is None or local_upkeep.last_stamp(stored, VIEW_STAMP) != stamp:
                stale.append((view.sql, stamp, path if stored is None else stored))
        if not stale:
            return
        queries = (f"(SELECT collect_list(struct(*)) FROM ({sql})) AS `_v{i}`" for i, (sql, _, _) in enumerate(stale))
        lists = ", ".join(queries)
        result = self.spark.sql(f"SELECT {lists}").toArrow()
        for i, (_, stamp, target) in enumerate(stale):
            rows = result.column(f"_v{i}").combine_chunks()
            assert isinstance(rows, pa.ListArray)
            local_upkeep.overwrite_arrow(target, pa.Table.from_struct_array(rows.values), stamp={VIEW_STAMP: stamp})

    def _stamp(self, view: View) -> str:
        """What a view's rows are computed from: its SQL and each input table's identity and version."""
        inputs = []
        for ref in view.inputs:
            delta = self._log(_path(ref))
            inputs.append(f"{ref}={delta.metadata().id}@{delta.version()}")
        return json.dumps({"sql": hashlib.sha256(view.sql.encode()).hexdigest()[:16], "inputs": inputs})

    def _after_commit(self, path: str) -> None:
        """The upkeep a commit of this process to the table at ``path`` makes due (a checkpoint)."""
        local_upkeep.checkpoint_if_due(path, every=self.checkpoint_every, table=lambda: self._log(path))

    def _log(self, path: str) -> DeltaTable:
        """The table at ``path`` as of its latest commit: the one read under the current hold of its
        lock brought up to date, else read now (and kept while that hold lasts)."""
        hold = table_locks.hold_id(path)
        cached = self._logs.get(path)
        if hold is not None and cached is not None and cached[0] == hold:
            delta = cached[1]
            if isinstance(delta, Future):  # read in the background: this job may have committed since
                try:
                    delta = delta.result()
                except Exception:  # read again here, where a failure is the caller's
                    delta = local_upkeep.load(path)
                self._logs[path] = (hold, delta)
            if local_upkeep.has_commit_after(path, delta.version()):
                delta.update_incremental()
            return delta
        delta = local_upkeep.load(path)
        if hold is None:
            self._logs.pop(path, None)
        else:
            self._logs[path] = (hold, delta)
        return delta


@dataclass
class CatalogHome:
    """Unity Catalog tables (``catalog.schema.table``): the engine answers, Databricks does upkeep."""

    spark: SparkSession
    blind_appends: bool = False
    # Databricks' MERGE rewrites only the files holding matched rows (or marks them deleted).
    whole_rewrites: bool = False

    def lock_path(self, table: TableRef) -> str | None:
        return None

    def merges_rows(self, table: TableRef, rows: int) -> bool:
        return False  # the engine's MERGE, on the cluster

    def prefetch(self, tables: Iterable[TableRef]) -> None:
        return None  # the engine answers, when asked

    def exists(self, table: TableRef) -> bool:
        return bool(self.spark.catalog.tableExists(_name(table)))

    def read(self, table: TableRef) -> DataFrame:
        return self.spark.table(_name(table))

    def stored_state(self, table: TableRef, where: str | None = None) -> tuple[StructType, bool]:
        stored = self.read(table)
        return stored.schema, where is not None and stored.filter(where).limit(1).count() == 0

    def save(self, writer: DataFrameWriter, table: TableRef) -> None:
        writer.saveAsTable(_name(table))

    def append(
        self, df: DataFrame | None, table: TableRef, *, rows: int | None = None, arrow: pa.Table | None = None
    ) -> None:
        self.save(frame_of(self.spark, df, arrow).write.format("delta").mode("append"), table)

    def merge_rows(
        self,
        df: DataFrame,
        table: TableRef,
        *,
        keys: Sequence[str],
        deleted: str | None = None,
        within: tuple[str, Sequence[date]] | None = None,
    ) -> None:
        raise NotImplementedError("a catalog table is merged by the engine (see merges_rows)")

    def after_rewrite(self, table: TableRef) -> None:
        return None  # auto compaction and checkpoints on Databricks

    def slices_share(self, table: TableRef, column: str, values: Sequence[date]) -> float | None:
        return None  # not asked: MERGE is the cheaper write there (whole_rewrites)

    def publish_views(self, views: Mapping[TableRef, View]) -> None:
        for ref, view in views.items():
            self.spark.sql(f"CREATE OR REPLACE VIEW {_name(ref)} AS {view.sql}")


def home_for(
    spark: SparkSession,
    settings: Settings,
    *,
    compact_above_files: int = local_upkeep.COMPACT_ABOVE_FILES,
    checkpoint_every: int = local_upkeep.CHECKPOINT_EVERY,
) -> TableHome:
    """The home of the settings' tables: Unity Catalog when a catalog is configured, else local."""
    if settings.uses_catalog:
        return CatalogHome(spark)
    return LocalDeltaHome(spark, compact_above_files=compact_above_files, checkpoint_every=checkpoint_every)


def frame_of(
    spark: SparkSession, df: DataFrame | None, arrow: pa.Table | None, schema: StructType | None = None
) -> DataFrame:
    """``df``, or a DataFrame of the ``arrow`` rows made in this process (of ``schema``, if given)."""
    if df is not None:
        return df
    if arrow is None:
        raise ValueError("a write needs a DataFrame or Arrow rows")
    return spark.createDataFrame(arrow) if schema is None else spark.createDataFrame(arrow, schema=schema)


@functools.cache
def _log_readers() -> ThreadPoolExecutor:
    """The threads that read local Delta logs in the background (``LocalDeltaHome.prefetch``)."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="delta-log")


def _path(table: TableRef) -> str:
    if table.path is None:
        raise ValueError(f"table {table} is a catalog table, not a local one")
    return table.path


def _name(table: TableRef) -> str:
    if table.full_name is None:
        raise ValueError(f"table {table} is a local table, not a catalog one")
    return table.full_name
