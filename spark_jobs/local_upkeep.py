"""Upkeep of local Delta tables, done in this process with the ``deltalake`` package (no engine
round trip): reading a table's schema and whether a slice is empty from its log, compacting small
files, writing checkpoints. Unity Catalog tables need none of it (Databricks does their upkeep and
the engine answers for them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql.types import StructType

from spark_jobs.errors import SchemaMismatchError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import pyarrow as pa
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

# A scan of many small files costs 2-4x one of a single file on the embedded engine (measured on 30
# daily appends): merged tables above this many files are compacted (see ``compact``).
COMPACT_ABOVE_FILES = 16
# Sail writes no Delta checkpoints, so every query of a local table replays all its commits since
# the last one (one JSON file per daily write). A checkpoint every this many commits bounds that:
# Delta's default, as on Databricks. Paired daily runs, days 30-60 in order: 1.16 s -> 1.04 s a day
# with 10 instead of 100, the checkpoints' own cost (~5-15 ms each) included. The price: Sail 0.7
# cannot time-travel to a version two or more commits after a checkpoint and before the next one
# ("Missing commit file"); the ``deltalake`` package reads every version still in the log (commit
# files older than 30 days are removed when a table is compacted, as on Databricks: see ``compact``).
CHECKPOINT_EVERY = 10
# Appends of at most this many rows (known before the write: a daily batch's records, new keys,
# dq_metrics rows) are fetched as Arrow and committed by ``deltalake`` in this process: Sail's
# append of 100 rows to a table of 30 daily commits took 18-20 ms vs 7 ms to a new table (it reads
# the log again to commit), ``deltalake``'s to the table already loaded under the lock 10-11 ms,
# the fetch included. Larger appends go through the engine (the rows would pass through Python).
IN_PROCESS_APPEND_ROWS = 50_000


def has_commits(path: str) -> bool:
    """Whether a Delta table exists at ``path`` (its log holds a commit)."""
    log_dir = os.path.join(path, "_delta_log")
    return os.path.isdir(log_dir) and any(f.endswith(".json") for f in os.listdir(log_dir))


def has_commit_after(path: str, version: int) -> bool:
    """Whether the table at ``path`` has a commit after ``version``: Delta commits are numbered
    without gaps, so one file tells (~10 us, where ``DeltaTable.update_incremental`` lists and reads
    the log: ~1.5 ms even when nothing changed)."""
    return os.path.exists(os.path.join(path, "_delta_log", f"{version + 1:020d}.json"))


def load(path: str) -> DeltaTable:
    """The table at ``path`` as of its latest commit (a replay of its log since the last checkpoint:
    ~3 ms plus ~0.3 ms per commit here); ``DeltaTable.update_incremental`` brings it up to date."""
    from deltalake import DeltaTable

    return DeltaTable(path)


def stored_state(path: str, where: str | None = None, *, delta: DeltaTable | None = None) -> tuple[StructType, bool]:
    """The schema of the table at ``path`` and whether no row matches ``where`` (None: not asked),
    from its Delta log and, for the files the log cannot prune, the predicate run by ``deltalake``
    (``delta``: the table, already loaded)."""
    from deltalake import QueryBuilder

    delta = delta if delta is not None else load(path)
    schema = StructType.fromJson(json.loads(delta.schema().to_json()))
    if where is None:
        return schema, False
    known = _slice_empty_from_log(delta, where)
    if known is not None:
        return schema, known
    matching = QueryBuilder().register("t", delta).execute(f"SELECT 1 AS one FROM t WHERE {where} LIMIT 1")
    return schema, matching.read_all().num_rows == 0


# A batch slice's predicate, as ``tables.batch_predicate`` writes it.
_SLICE = re.compile(r"(?P<column>\w+) = DATE'(?P<day>\d{4}-\d{2}-\d{2})'")


def _slice_empty_from_log(delta: DeltaTable, where: str) -> bool | None:
    """Whether no row matches ``where``, when a batch slice's predicate (``column = DATE'd'``) can be
    answered from the log's file list alone (~0.3 ms instead of ~1 ms for the query): no file in
    the slice's partition, or no file whose statistics (min, max) of the column admit the day, says
    empty; a file of the partition with rows, or one whose column holds only the day, says not.
    None: the log cannot tell (the query decides)."""
    import pyarrow as pa

    match = _SLICE.fullmatch(where.strip())
    if match is None:
        return None
    column, day = match["column"], date.fromisoformat(match["day"])
    actions = pa.table(delta.get_add_actions(flatten=True))
    if "num_records" not in actions.column_names:
        return None
    records = actions.column("num_records").to_pylist()
    if column in delta.metadata().partition_columns:
        values = actions.column(f"partition.{column}").to_pylist()
        inside = [rows for value, rows in zip(values, records, strict=True) if value == day]
        if any(rows is None for rows in inside):
            return None
        return not any(inside)
    names = {f"min.{column}", f"max.{column}", f"null_count.{column}"}
    if not names <= set(actions.column_names):
        return None
    lows, highs = actions.column(f"min.{column}").to_pylist(), actions.column(f"max.{column}").to_pylist()
    nulls = actions.column(f"null_count.{column}").to_pylist()
    admits = False
    for low, high, null, rows in zip(lows, highs, nulls, records, strict=True):
        if rows == 0:
            continue
        if rows is None or null is None or (rows > null and (low is None or high is None)):
            return None  # a file with rows of the column but no statistics of it
        if low is not None and high is not None and low <= day <= high:
            if low == high == day and rows > null:
                return False  # every non-NULL value of the column in this file is the day
            admits = True
    return None if admits else True


def slices_share(delta: DeltaTable, column: str, values: Sequence[date]) -> float | None:
    """The share of the table's rows in the data files whose ``column`` statistics (min, max) admit
    one of ``values``: the files a ``replaceWhere`` of those values rewrites. None when a file has
    no row count, or the table no rows; a file without statistics of ``column`` counts as holding
    them."""
    import pyarrow as pa

    actions = pa.table(delta.get_add_actions(flatten=True))
    names = set(actions.column_names)
    if "num_records" not in names:
        return None
    lows = actions.column(f"min.{column}").to_pylist() if f"min.{column}" in names else None
    highs = actions.column(f"max.{column}").to_pylist() if f"max.{column}" in names else None
    total = touched = 0
    for i, rows in enumerate(actions.column("num_records").to_pylist()):
        if rows is None:
            return None
        total += rows
        low, high = (lows[i] if lows else None), (highs[i] if highs else None)
        try:
            holds = low is None or high is None or any(low <= v <= high for v in values)
        except TypeError:  # statistics not comparable with the values (say, time zones): not known
            return None
        touched += rows if holds else 0
    return touched / total if total else None


def append_arrow(delta: DeltaTable, rows: pa.Table) -> None:
    """Commit ``rows`` to ``delta`` (loaded and up to date) as one append, in the table's own
    partitioning, cast to the table's Arrow types by column name (the callers check the Spark
    schema against the table's first; a column the table lacks fails here all the same)."""
    from deltalake import PostCommitHookProperties, write_deltalake

    target = _arrow_schema(delta, rows)
    # No checkpoint or expired-log cleanup of deltalake's own: ``checkpoint_if_due`` writes them at
    # this module's interval (and only compaction removes old commits, as documented).
    hooks = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    write_deltalake(delta, rows.select(target.names).cast(target), mode="append", post_commithook_properties=hooks)


def overwrite_arrow(target: str | DeltaTable, rows: pa.Table, *, stamp: Mapping[str, str]) -> None:
    """Replace every row of the table at ``target`` (a path, or the table loaded) with ``rows``, in
    their own schema (the table is made if there is none), as one commit that records ``stamp`` in
    its commit info (``last_stamp`` reads it back). The table's log is kept by ``deltalake``'s own
    hooks (a checkpoint every 100 commits, expired commits removed): a table that is only ever
    overwritten has no compaction to do it."""
    from deltalake import CommitProperties, write_deltalake

    properties = CommitProperties(custom_metadata=dict(stamp))
    write_deltalake(target, rows, mode="overwrite", schema_mode="overwrite", commit_properties=properties)


def last_stamp(delta: DeltaTable, key: str) -> str | None:
    """The value of ``key`` that the table's latest commit recorded (``overwrite_arrow``), if any."""
    [latest] = delta.history(1) or [{}]
    value = latest.get(key)
    return value if isinstance(value, str) else None


def _arrow_schema(delta: DeltaTable, rows: pa.Table, *, besides: str | None = None) -> pa.Schema:
    """The table's Arrow schema, once ``rows`` are known to have its columns (and ``besides``)."""
    import pyarrow as pa

    target = pa.schema(delta.schema().to_arrow())
    have = sorted(c for c in rows.column_names if c != besides)
    if have != sorted(target.names):
        raise SchemaMismatchError(
            f"schema mismatch for the table at {delta.table_uri}: rows have columns {have}, "
            f"the table {sorted(target.names)}"
        )
    return target


def merge_arrow(
    delta: DeltaTable,
    rows: pa.Table,
    *,
    keys: Sequence[str],
    deleted: str | None = None,
    within: tuple[str, Sequence[date]] | None = None,
) -> dict[str, int]:
    """Merge ``rows`` into ``delta`` (loaded and up to date) on ``keys``, as one commit, with the
    result of SQL ``MERGE INTO t USING rows s ON keys WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED
    THEN INSERT *``; ``deleted``: a boolean column of ``rows`` flagging keys whose stored row is
    deleted instead (and never inserted). ``within``: a column and values that every stored row the
    merge changes has (the caller knows: the rows are exactly those that change), so that only the
    files that may hold them are read and rewritten. The rows are cast to the table's Arrow types by
    column name (a column the table lacks, or lacks in ``rows``, fails here). Returns deltalake's
    metrics of the merge."""
    import pyarrow as pa
    from deltalake import PostCommitHookProperties

    target = _arrow_schema(delta, rows, besides=deleted)
    # Nullable: the keys to delete carry NULL in every other column (``write_plan.flagged_source``);
    # deltalake still refuses a NULL in a non-nullable column of a row it writes.
    fields = [f.with_nullable(True) for f in target] + ([pa.field(deleted, pa.bool_())] if deleted else [])
    source = rows.select([f.name for f in fields]).cast(pa.schema(fields))
    on = " AND ".join(f"t.{_ident(k)} = s.{_ident(k)}" for k in keys)
    if within is not None:
        column, values = within
        on += f" AND t.{_ident(column)} IN ({', '.join(repr(v.isoformat()) for v in values)})"
    hooks = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    merger = delta.merge(
        source, on, source_alias="s", target_alias="t", streamed_exec=False, post_commithook_properties=hooks
    )
    assignments = {_ident(c): f"s.{_ident(c)}" for c in target.names}
    if deleted:
        merger = merger.when_matched_delete(predicate=f"s.{_ident(deleted)}")
        kept = f"NOT s.{_ident(deleted)}"
        merger = merger.when_matched_update(assignments, predicate=kept).when_not_matched_insert(
            assignments, predicate=kept
        )
    else:
        merger = merger.when_matched_update(assignments).when_not_matched_insert(assignments)
    return dict(merger.execute())


def merges_in_process(delta: DeltaTable) -> bool:
    """Whether ``merge_arrow`` may write to the table: ``deltalake``'s MERGE writes its string
    columns as Arrow string views, which Sail 0.7 reads except into a non-nullable string column
    ("Cannot cast column 'country' from 'Utf8View' (physical) to 'Utf8' (logical)"); a table with one
    is merged by the engine."""
    fields = json.loads(delta.schema().to_json())["fields"]
    return not any(_non_nullable_bytes(field["type"], nullable=field["nullable"]) for field in fields)


def _non_nullable_bytes(kind: object, *, nullable: bool) -> bool:
    """Whether a Delta schema type (its JSON) is, or holds, a non-nullable string or binary."""
    if isinstance(kind, str):
        return kind in ("string", "binary") and not nullable
    if not isinstance(kind, dict):
        return False
    if kind.get("type") == "struct":
        return any(_non_nullable_bytes(f["type"], nullable=f["nullable"]) for f in kind["fields"])
    if kind.get("type") == "array":
        return _non_nullable_bytes(kind["elementType"], nullable=kind["containsNull"])
    if kind.get("type") == "map":
        return _non_nullable_bytes(kind["keyType"], nullable=False) or _non_nullable_bytes(
            kind["valueType"], nullable=kind["valueContainsNull"]
        )
    return False


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier for ``deltalake``'s (DataFusion's) parser."""
    return '"' + name.replace('"', '""') + '"'


def compact(path: str, *, above_files: int = COMPACT_ABOVE_FILES, delta: DeltaTable | None = None) -> bool:
    """Bin-pack the data files of a table of more than ``above_files`` files into larger ones (same
    rows, one ``OPTIMIZE`` commit without data change); return whether it did.

    Every daily append or MERGE adds files, and Sail has no ``OPTIMIZE``: ``deltalake`` does it in
    this process, at a third of the time of reading the table and overwriting it through the engine.
    ``delta``: the table, loaded and up to date (it is brought up to date with the compaction).
    """
    delta = delta if delta is not None else load(path)
    if len(delta.file_uris()) <= above_files:
        return False
    metrics = delta.optimize.compact()
    log.info("compacted %s: %d files into %d", path, metrics["numFilesRemoved"], metrics["numFilesAdded"])
    return bool(metrics["numFilesRemoved"])


def checkpoint_phase(path: str, every: int = CHECKPOINT_EVERY) -> int:
    """The versions of the table at ``path`` that get a checkpoint: those equal to this modulo
    ``every``. Fixed per table (from its layer folder and name), and spread over tables: the tables
    of a daily run each commit about once a day, so with one phase for all (Delta's ``version % 10
    == 0``) every table would write its checkpoint on the same day, ~20 ms each."""
    layer_and_name = "/".join(os.path.normpath(path).split(os.sep)[-2:])
    return zlib.crc32(layer_and_name.encode()) % every


def checkpoint_if_due(
    path: str, *, every: int = CHECKPOINT_EVERY, table: Callable[[], DeltaTable] | None = None
) -> bool:
    """Write a Delta checkpoint when the table has reached a version of its phase
    (``checkpoint_phase``) since its last checkpoint, so one every ``every`` commits; return whether
    it did. Decided from a listing of ``_delta_log``, so the usual case reads no log. ``table``: gives
    the table loaded and up to date, when the caller holds it (else it is read here)."""
    log_dir = os.path.join(path, "_delta_log")
    versions = [int(name[:-5]) for name in os.listdir(log_dir) if name.endswith(".json") and name[:-5].isdigit()]
    last = 0  # the first commit creates the table: the first checkpoint comes after it
    try:
        with open(os.path.join(log_dir, "_last_checkpoint")) as fh:
            last = int(json.load(fh)["version"])
    except (FileNotFoundError, ValueError, KeyError):
        pass
    phase = checkpoint_phase(path, every)
    due = last + 1 + (phase - last - 1) % every  # the first version after ``last`` of the phase
    if not versions or max(versions) < due:
        return False
    (table() if table is not None else load(path)).create_checkpoint()
    return True
