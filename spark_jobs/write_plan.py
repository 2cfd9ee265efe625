"""Which write a table gets, decided before anything is written.

``merge_effect`` asks the engine, in one query, what ``MERGE INTO stored USING source`` would do;
``merge_path`` and ``slice_path`` turn that (and what the table's home allows) into the write to
make. The decisions are pure, so a test can state them; ``TableStore`` executes them.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import reduce
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import StructType

DELETE = "_delete"  # flag column of a merge source: the key's stored row is deleted
# Columns of a source compared with the table it is merged into (``silver.transforms.newest_per_key``
# with ``compare_on``): whether the key has a stored row, and whether the row is that stored row
# (every column equal); with the stored row's ``_other_<slice column>``
OTHER_PRESENT, OTHER_SAME = "_other_present", "_other_same"


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


class MergePath(StrEnum):
    NOTHING = "nothing"  # no stored row would change and no key is new
    APPEND = "append"  # only new keys: append them
    SLICES = "slices"  # rewrite just the slices holding every row that changes (replaceWhere)
    REWRITE = "rewrite"  # overwrite the whole table with the merged rows
    MERGE = "merge"  # MERGE INTO
    ROWS = "rows"  # the rows that change merged in by the table's home, in this process


# A slice rewrite rewrites every file that may hold one of its slices (all of the table once it is
# compacted into one file); from this share of the table's rows in those files, the whole table is
# rewritten instead, which does not join the source to the table to tell the rows that change
# (measured on 19k customers whose oldest slice is touched, share 1.0: 0.053 s vs 0.105 s).
REWRITE_FROM_SHARE = 0.5


def merge_path(
    effect: MergeEffect,
    *,
    blind_appends: bool,
    slice_column: str | None,
    whole_rewrites: bool = False,
    slices_share: float | None = None,
    in_process: bool = False,
) -> MergePath:
    """The cheapest write with the result of the MERGE. ``blind_appends``: the table's home lets a
    write that only adds rows append without reading the table (a local table under its lock); a
    catalog table is not blind-appended to (its ``MERGE`` or ``replaceWhere`` reads what it
    replaces, so a concurrent writer's commit conflicts instead of duplicating rows).
    ``whole_rewrites``: the engine rewrites the whole table for less than its ``MERGE`` costs
    (see ``TableHome.whole_rewrites``); ``slices_share``: the share of the table's rows a rewrite
    of the effect's slices would rewrite (None: not known). ``in_process``: the table's home
    merges this source itself (a small source into a local table: ``TableHome.merge_rows``), at
    less than any write through the engine that rewrites stored rows."""
    if not effect.rewrites:
        if not effect.inserts:
            return MergePath.NOTHING
        if blind_appends:
            return MergePath.APPEND
    if in_process:
        return MergePath.ROWS
    most = whole_rewrites and slices_share is not None and slices_share >= REWRITE_FROM_SHARE
    if slice_column and effect.slices and not most:
        return MergePath.SLICES
    return MergePath.REWRITE if whole_rewrites else MergePath.MERGE


class SlicePath(StrEnum):
    CREATE = "create"  # a new table
    SKIP = "skip"  # nothing to write and nothing to replace
    APPEND = "append"  # the slice is empty: nothing to replace
    REPLACE = "replace"  # overwrite the slice (replaceWhere)


def slice_path(*, exists: bool, slice_empty: bool, known_empty: bool, blind_appends: bool) -> SlicePath:
    """The write of ``replace_slice``: a plain append when the slice is still empty (a new batch:
    a third of a ``replaceWhere`` on a table with history), where ``blind_appends`` allows it."""
    if not exists:
        return SlicePath.CREATE
    if slice_empty and known_empty:
        return SlicePath.SKIP
    if slice_empty and blind_appends:
        return SlicePath.APPEND
    return SlicePath.REPLACE


def flagged_source(
    source: DataFrame, deletes: DataFrame | None, keys: tuple[str, ...], *, schema: StructType | None = None
) -> DataFrame:
    """``source`` plus the ``deletes`` keys, with a :data:`DELETE` flag saying which is which
    (``schema``: ``source``'s, when the caller has it)."""
    upserts = source.withColumn(DELETE, F.lit(False))
    if deletes is None:
        return upserts
    schema = schema if schema is not None else source.schema
    types = {f.name: f.dataType for f in schema.fields}
    removed = deletes.select(
        *[
            F.col(c).cast(types[c]).alias(c) if c in keys else F.lit(None).cast(types[c]).alias(c)
            for c in schema.fieldNames()
        ],
        F.lit(True).alias(DELETE),
    )
    return upserts.unionByName(removed)


def classified(
    source: DataFrame, *, stored: DataFrame, keys: tuple[str, ...], update_when: str | None, columns: Sequence[str]
) -> tuple[DataFrame, Column, Column, Column]:
    """A :func:`flagged_source` (alias ``s``) left-joined to ``stored`` (alias ``t``) on ``keys``, with
    the conditions "new key", "matched and would change" (``update_when`` holds and one of the data
    ``columns`` differs, NULL-safe) and "matched and deleted". The columns are passed in, not read
    from ``source``: asking a plan for its schema is a round trip to the engine."""
    s, t = source.alias("s"), stored.withColumn("_stored", F.lit(True)).alias("t")
    on = reduce(operator.and_, [F.col(f"s.{k}") == F.col(f"t.{k}") for k in keys])
    differs = reduce(operator.or_, [~F.col(f"s.{c}").eqNullSafe(F.col(f"t.{c}")) for c in columns])
    stored_row, delete = F.col("t._stored").isNotNull(), F.col(f"s.{DELETE}")
    changed = stored_row & ~delete & (F.expr(update_when) & differs if update_when else differs)
    return s.join(t, on, "left"), ~stored_row & ~delete, changed, stored_row & delete


def effect_query(
    source: DataFrame,
    *,
    stored: DataFrame,
    keys: tuple[str, ...],
    update_when: str | None,
    columns: Sequence[str],
    slice_column: str | None = None,
    prefix: str = "",
) -> DataFrame:
    """One row saying what ``MERGE INTO stored USING source`` would do (read it with
    :func:`effect_from_row`), in columns named after ``prefix`` so that it can be fetched in one
    query with other such rows. ``source`` is a :func:`flagged_source` with the data ``columns``. A
    matched row counts as changed only if ``update_when`` (aliases ``s``, ``t``) holds and some column
    differs, so re-merging rows already in the table counts nothing."""
    joined, new, changed, removed = classified(
        source, stored=stored, keys=keys, update_when=update_when, columns=columns
    )
    slices = (F.col(f"s.{slice_column}"), F.col(f"t.{slice_column}")) if slice_column else None
    matched = ~F.col(f"s.{DELETE}") & ~new
    return joined.agg(*_effect_columns(new, matched, changed, removed, slices=slices, prefix=prefix))


def _effect_columns(
    new: Column, matched: Column, changed: Column, removed: Column, *, slices: tuple[Column, Column] | None, prefix: str
) -> list[Column]:
    """The aggregates of an effect row (read by :func:`effect_from_row`) from the conditions of a
    source row: ``slices`` are the source row's and its stored row's slice columns (None: none)."""
    aggs = [
        F.count_if(new).alias(f"{prefix}inserts"),
        F.count_if(matched).alias(f"{prefix}matched"),
        F.count_if(changed).alias(f"{prefix}updates"),
        F.count_if(removed).alias(f"{prefix}deletes"),
    ]
    if slices is not None:
        s_slice, t_slice = slices
        written, rewritten = new | changed, changed | removed
        aggs += [
            F.array_union(F.collect_set(F.when(written, s_slice)), F.collect_set(F.when(rewritten, t_slice))).alias(
                f"{prefix}slices"
            ),
            F.count_if((written & s_slice.isNull()) | (rewritten & t_slice.isNull())).alias(f"{prefix}null_slices"),
        ]
    return aggs


def compared_effect_query(compared: DataFrame, *, slice_column: str, prefix: str = "") -> DataFrame:
    """The :func:`effect_query` row (no deletes) of merging ``compared`` into a table whose rows it
    was already compared with: its rows carry ``_other_present``, ``_other_same`` and
    ``_other_<slice_column>`` (``silver.transforms.newest_per_key`` with ``compare_on``), from the
    join that chose them, so the table is not joined again."""
    stored_row, same = F.col(OTHER_PRESENT), F.col(OTHER_SAME)
    slices = (F.col(slice_column), F.col(f"_other_{slice_column}"))
    aggs = _effect_columns(~stored_row, stored_row, stored_row & ~same, F.lit(False), slices=slices, prefix=prefix)
    return compared.agg(*aggs)


def changed_rows(compared: DataFrame) -> DataFrame:
    """The rows of a compared source (see :func:`compared_effect_query`) that its merge writes: new
    keys and rows that differ from the stored one (the others are the stored rows already)."""
    return compared.filter(~F.col(OTHER_SAME))


def effect_from_row(row: Mapping[str, Any], *, slice_column: str | None, prefix: str = "") -> MergeEffect:
    """The :class:`MergeEffect` in a row of :func:`effect_query` (same ``slice_column`` and ``prefix``)."""
    slices = None
    if slice_column and not row[f"{prefix}null_slices"]:
        slices = tuple(sorted(row[f"{prefix}slices"]))
    return MergeEffect(
        int(row[f"{prefix}inserts"] or 0),
        int(row[f"{prefix}matched"] or 0),
        int(row[f"{prefix}updates"] or 0),
        slices,
        int(row[f"{prefix}deletes"] or 0),
    )


def merge_effect(
    source: DataFrame,
    *,
    stored: DataFrame,
    keys: tuple[str, ...],
    update_when: str | None,
    columns: Sequence[str],
    slice_column: str | None = None,
) -> MergeEffect:
    """What ``MERGE INTO stored USING source`` would do, in one query (see :func:`effect_query`)."""
    query = effect_query(
        source, stored=stored, keys=keys, update_when=update_when, columns=columns, slice_column=slice_column
    )
    row = query.first()
    assert row is not None
    return effect_from_row(row.asDict(), slice_column=slice_column)
