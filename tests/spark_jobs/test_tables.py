from __future__ import annotations

import pytest
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.tables import SchemaMismatchError, TableStore, merge_effect, schema_differences


def test_schema_differences_name_missing_extra_and_retyped_columns():
    table = StructType([StructField("id", LongType()), StructField("name", StringType())])
    df = StructType([StructField("ID", IntegerType()), StructField("nick", StringType())])
    assert schema_differences(table, df) == [
        "missing columns ['name']",
        "unexpected columns ['nick']",
        "column 'id' is int, table has bigint",
    ]


@pytest.mark.delta
def test_write_with_another_schema_fails_before_writing(spark, settings):
    store = TableStore(spark, settings)
    ref = settings.table("silver", "t")
    store.replace_slice(spark.createDataFrame([(1, "a")], "id long, name string"), ref, where="id = 1")

    with pytest.raises(SchemaMismatchError, match=r"silver\.t .*column 'id' is int, table has bigint"):
        store.replace_slice(spark.createDataFrame([(1, "b")], "id int, name string"), ref, where="id = 1")
    with pytest.raises(SchemaMismatchError, match=r"unexpected columns \['extra'\]"):
        store.replace_slice(
            spark.createDataFrame([(1, "b", 1)], "id long, name string, extra int"), ref, where="id = 1"
        )

    assert [tuple(r) for r in store.read(ref).collect()] == [(1, "a")]


@pytest.mark.delta
def test_replace_slice_overwrites_only_matching_rows(spark, settings):
    store = TableStore(spark, settings)
    ref = settings.table("silver", "t")
    store.replace_slice(spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string"), ref, where="id = 1")
    store.replace_slice(spark.createDataFrame([(1, "z")], "id long, name string"), ref, where="id = 1")
    assert sorted(tuple(r) for r in store.read(ref).collect()) == [(1, "z"), (2, "b")]


def _last_operation(ref) -> str:
    from deltalake import DeltaTable

    commit = DeltaTable(ref.path).history(1)[0]
    mode = commit.get("operationParameters", {}).get("mode")
    return f"{commit['operation']} {mode}" if commit["operation"] == "WRITE" and mode else str(commit["operation"])


@pytest.mark.delta
def test_replace_slice_appends_a_new_slice_and_replaces_an_existing_one(spark, settings):
    store = TableStore(spark, settings)
    ref = settings.table("bronze", "t")
    schema = "id long, name string, day int"
    store.replace_slice(spark.createDataFrame([(1, "a", 1)], schema), ref, where="day = 1", partition_by=("day",))
    store.replace_slice(spark.createDataFrame([(2, "b", 2), (3, "c", 2)], schema), ref, where="day = 2")
    assert _last_operation(ref) == "WRITE Append"
    store.replace_slice(spark.createDataFrame([(4, "d", 2)], schema), ref, where="day = 2")
    assert _last_operation(ref) == "WRITE Overwrite"
    assert sorted(tuple(r) for r in store.read(ref).collect()) == [(1, "a", 1), (4, "d", 2)]


@pytest.mark.delta
def test_merge_appends_when_nothing_stored_would_change_and_matches_sql_merge(spark, settings):
    """Each batch goes through ``TableStore.merge`` (append fast path or MERGE) and through a plain
    SQL MERGE into a reference table: both tables must stay identical."""
    store = TableStore(spark, settings)
    ref, expected = settings.table("silver", "t"), settings.table("silver", "reference")
    schema = "id long, version int, name string"
    newer = "s.version >= t.version"
    batches = [  # (rows, what MERGE would do: inserts, matches, changed rows; how the table is written)
        ([(1, 1, "a"), (2, 1, None)], (0, 0, 0, "CREATE TABLE")),
        ([(3, 1, "c"), (4, 1, "d")], (2, 0, 0, "WRITE Append")),  # new keys only
        ([(1, 1, "a"), (2, 1, None), (5, 1, "e")], (1, 2, 0, "WRITE Append")),  # stored rows again, NULL-safe
        ([(1, 0, "old"), (6, 1, "f")], (1, 1, 0, "WRITE Append")),  # an older version: no update
        ([(1, 2, "a2"), (7, 1, "g")], (1, 1, 1, "MERGE")),  # a newer version
        ([(2, 1, "b")], (0, 1, 1, "MERGE")),  # NULL → value
    ]
    for i, (rows, (inserts, matched, updates, operation)) in enumerate(batches):
        df = spark.createDataFrame(rows, schema)
        if i:
            effect = merge_effect(df, store.read(ref), keys=("id",), update_when=newer)
            assert effect == (inserts, matched, updates), i
            df.createOrReplaceTempView("batch")
            spark.sql(
                f"MERGE INTO {expected.sql} t USING batch s ON t.id = s.id "
                f"WHEN MATCHED AND ({newer}) THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
            )
        else:
            store.replace_slice(df, expected, where="true")
        store.merge(df, ref, keys=("id",), update_when=newer)
        assert _last_operation(ref) == operation, i
        assert sorted(store.read(ref).collect()) == sorted(store.read(expected).collect()), i
    assert sorted(tuple(r) for r in store.read(ref).collect()) == [
        (1, 2, "a2"), (2, 1, "b"), (3, 1, "c"), (4, 1, "d"), (5, 1, "e"), (6, 1, "f"), (7, 1, "g")
    ]  # fmt: skip


@pytest.mark.delta
def test_merged_table_over_the_file_limit_is_compacted_with_the_same_rows(spark, settings):
    from deltalake import DeltaTable

    store = TableStore(spark, settings, compact_above_files=3)
    ref = settings.table("gold", "t")
    schema = "id long, name string"
    for i in range(4):  # one table, then an appended file per batch
        store.merge(spark.createDataFrame([(i, f"n{i}")], schema), ref, keys=("id",))
    files = DeltaTable(ref.path).file_uris()
    assert len(files) == 1  # 4 files after the last append: rewritten as one
    assert sorted(tuple(r) for r in store.read(ref).collect()) == [(0, "n0"), (1, "n1"), (2, "n2"), (3, "n3")]
    assert not store.compact(ref)  # under the limit: left as it is
    assert DeltaTable(ref.path).file_uris() == files
