from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql.types import LongType, StringType, StructField, StructType

from spark_jobs.bronze.parse import Ingestion, bronze_records, parse_csv_lines, quarantined_lines

LINES = StructType([StructField("_line_number", LongType()), StructField("_raw_line", StringType())])
META = Ingestion("/landing/x.csv", date(2024, 1, 15), datetime(2024, 1, 16, 3, 0, tzinfo=UTC))


def _parse(spark, rows, n_fields=3):
    return spark.createDataFrame(rows, LINES).transform(parse_csv_lines(n_fields))


def test_plain_lines_split_on_commas_and_empty_fields_become_null(spark):
    parsed = _parse(spark, [(2, "1,a b, c "), (3, "2,,x")])
    got = parsed.transform(bronze_records(["id", "name", "code"], META)).select("id", "name", "code", "_line_number")
    expected = spark.createDataFrame(
        [("1", "a b", " c ", 2), ("2", None, "x", 3)],
        "id string, name string, code string, _line_number long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_quoted_fields_keep_commas_and_unescape_doubled_quotes(spark):
    parsed = _parse(spark, [(2, '1,"Road-150, Red",x'), (3, '2,"say ""hi""",""')])
    got = parsed.transform(bronze_records(["id", "name", "code"], META)).select("id", "name", "code")
    expected = spark.createDataFrame(
        [("1", "Road-150, Red", "x"), ("2", 'say "hi"', None)], "id string, name string, code string"
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,2", "expected 3 fields, found 2"),
        ("1,2,3,4", "expected 3 fields, found 4"),
        ('1,"open,3', "unbalanced quotes (broken quoting or a record spanning lines)"),
        ('1,"x"y,3', "malformed quoted field (text after a closing quote)"),
        ("1,caf\ufffd,3", "invalid UTF-8 byte sequence"),
        ("   ", "expected 3 fields, found 1"),
    ],
)
def test_unparseable_lines_are_quarantined_with_a_reason(spark, line, reason):
    parsed = _parse(spark, [(7, line), (8, "a,b,c")])
    rejected = parsed.transform(quarantined_lines(META)).select("_line_number", "_raw_line", "_reason")
    expected = spark.createDataFrame([(7, line, reason)], "_line_number long, _raw_line string, _reason string")
    assert_df_equality(rejected, expected, ignore_nullable=True)
    assert parsed.transform(bronze_records(["a", "b", "c"], META)).count() == 1


def test_every_line_is_either_a_record_or_quarantined(spark):
    rows = [(i, line) for i, line in enumerate(["1,2,3", "1,2", '"a,b",c,d', '"x', "a,b,c,d"], start=2)]
    parsed = _parse(spark, rows)
    n_records = parsed.transform(bronze_records(["a", "b", "c"], META)).count()
    n_rejects = parsed.transform(quarantined_lines(META)).count()
    assert (n_records, n_rejects) == (2, 3)


def test_records_carry_ingestion_metadata(spark):
    got = _parse(spark, [(5, "1,2,3")]).transform(bronze_records(["a", "b", "c"], META)).collect()[0]
    assert got["_source_file"] == "/landing/x.csv"
    assert got["_batch_date"] == date(2024, 1, 15)
    assert got["_line_number"] == 5
    assert got["_ingested_at"].replace(tzinfo=None) == datetime(2024, 1, 16, 3, 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,a\x00b,3", "control character U+0000 in field 2"),
        ("\x01,b,c", "control character U+0001 in field 1"),
        ("1,2,x\x08", "control character U+0008 in field 3"),
        ("1,\x0b,3", "control character U+000B in field 2"),
        ("1,\x0c,3", "control character U+000C in field 2"),
        ("1,a\rb,3", "control character U+000D in field 2"),  # a CR inside the line (a trailing one is stripped)
        ("1,2,\x1b[0m", "control character U+001B in field 3"),
        ("1,\x1f,3", "control character U+001F in field 2"),
        ("1,2,del\x7f", "control character U+007F in field 3"),
        ("1,\u0085,3", "control character U+0085 in field 2"),  # C1 (NEL), valid UTF-8 but no text
        ('1,"quoted, \x00 too",3', "control character U+0000 in field 2"),
        ("1,\x00,\x01", "control character U+0000 in field 2"),  # the first one is named
    ],
)
def test_text_with_control_characters_is_quarantined_naming_the_character_and_field(spark, line, reason):
    parsed = _parse(spark, [(7, line), (8, "a,b,c")])
    rejected = parsed.transform(quarantined_lines(META)).select("_line_number", "_raw_line", "_reason")
    expected = spark.createDataFrame([(7, line, reason)], "_line_number long, _raw_line string, _reason string")
    assert_df_equality(rejected, expected, ignore_nullable=True)
    assert parsed.transform(bronze_records(["a", "b", "c"], META)).count() == 1


def test_control_character_reason_names_the_column_when_known(spark):
    parsed = spark.createDataFrame([(3, "1,a\x00")], LINES).transform(parse_csv_lines(2, columns=("id", "name")))
    assert parsed.transform(quarantined_lines(META)).first()["_reason"] == "control character U+0000 in field 2 (name)"


def test_tabs_and_printable_unicode_are_text(spark):
    parsed = _parse(spark, [(2, "1,a\tb,caf\u00e9 \u00a0\u20ac")])
    assert parsed.transform(quarantined_lines(META)).count() == 0
    got = parsed.transform(bronze_records(["a", "b", "c"], META)).first()
    assert (got["b"], got["c"]) == ("a\tb", "caf\u00e9 \u00a0\u20ac")
