from __future__ import annotations

import pytest
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.tables import SchemaMismatchError, TableStore, schema_differences


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
