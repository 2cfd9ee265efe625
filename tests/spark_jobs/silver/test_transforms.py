"""Cleaning rules S1–S18, each on a few inline rows (runs on Sail and on classic Spark)."""

from __future__ import annotations

from datetime import date

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs.silver import transforms as t

D = date(2024, 1, 15)


def bronze(spark, columns: str, rows: list[tuple]):
    """Bronze-shaped rows: text columns + lineage (line numbers 2, 3, ...)."""
    names = [c.strip() for c in columns.split(",")]
    schema = ", ".join(f"{c} string" for c in names)
    df = spark.createDataFrame(rows, schema)
    return df.withColumn("_batch_date", F.lit(D)).withColumn(
        "_line_number", (F.monotonically_increasing_id() + 2).cast("long")
    )


def test_parsers_turn_bad_text_into_null(spark):
    from spark_jobs.parsing import parse_int, parse_iso_date, parse_yyyymmdd

    df = spark.createDataFrame(
        [(" 12", "2020-02-29", "20200229"), ("x", "2019-02-29", "20101399"), ("1e3", " 2013-02-03", "0"),
         (None, "2020-1-01", "3215"), ("-3", "0000-01-01", "00000000"), ("99999999999", "", "2010122")],
        "i string, d string, n string",
    )  # fmt: skip
    got = df.select(
        parse_int(F.col("i")).alias("i"), parse_iso_date(F.col("d")).alias("d"), parse_yyyymmdd(F.col("n")).alias("n")
    )
    expected = spark.createDataFrame(
        [(12, date(2020, 2, 29), date(2020, 2, 29)), (None, None, None), (None, date(2013, 2, 3), None),
         (None, None, None), (-3, None, None), (None, None, None)],
        "i int, d date, n date",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_nullable=True)


def test_customers_trim_names_and_map_codes_s3_s4_s5(spark):
    rows = [("11000", " AW1 ", " Jon ", "Yang  ", " s", "f ", "2020-01-02"),
            ("11001", "AW2", "Ann", "Lee", "M", "M", "2020-01-03"),
            ("", "AW3", "", "Ng", "X", "", "bad")]  # fmt: skip
    df = bronze(
        spark, "cst_id, cst_key, cst_firstname, cst_lastname, cst_marital_status, cst_gndr, cst_create_date", rows
    )
    got = df.transform(t.clean_crm_cust_info).drop("_raw", "_batch_date", "_line_number")
    expected = spark.createDataFrame(
        [(11000, "AW1", "Jon", "Yang", "Single", "Female", date(2020, 1, 2)),
         (11001, "AW2", "Ann", "Lee", "Married", "Male", date(2020, 1, 3)),
         (None, "AW3", None, "Ng", "n/a", "n/a", None)],
        "cst_id int, cst_key string, cst_firstname string, cst_lastname string, cst_marital_status string, "
        "cst_gndr string, cst_create_date date",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_cleaned_rows_keep_the_original_text(spark):
    df = bronze(spark, "cid, cntry", [("AW-1", " DE ")])
    raw = df.transform(t.clean_erp_loc_a101).select("_raw.*").collect()[0]
    assert raw.asDict() == {"cid": "AW-1", "cntry": " DE "}


def test_products_split_key_default_cost_and_map_line_s6_s7_s8(spark):
    rows = [("210", "CO-RF-FR-R92B-58", "HL Road Frame", "", "R ", "2003-07-01", "2007-12-28"),
            ("211", "AC-HE-HL-U509-R", "Sport Helmet", "13", " m", "2011-07-01", ""),
            ("212", "BI-RB-BK-R93R-62", "Road-150", "2171", "", "2011-07-01", ""),
            ("213", "CL-SO-SO-B909-M", "Socks", "x", "t", "2011-07-01", "")]  # fmt: skip
    df = bronze(spark, "prd_id, prd_key, prd_nm, prd_cost, prd_line, prd_start_dt, prd_end_dt", rows)
    got = df.transform(t.clean_crm_prd_info).select(
        "prd_id", "cat_id", "prd_key", "prd_cost", "prd_line", "prd_start_dt"
    )
    expected = spark.createDataFrame(
        [(210, "CO_RF", "FR-R92B-58", 0, "Road", date(2003, 7, 1)),
         (211, "AC_HE", "HL-U509-R", 13, "Mountain", date(2011, 7, 1)),
         (212, "BI_RB", "BK-R93R-62", 2171, "n/a", date(2011, 7, 1)),
         (213, "CL_SO", "SO-B909-M", 0, "Touring", date(2011, 7, 1))],
        "prd_id int, cat_id string, prd_key string, prd_cost int, prd_line string, prd_start_dt date",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_end_date_is_the_day_before_the_next_version_s9(spark):
    versions = spark.createDataFrame(
        [("A", date(2011, 7, 1)), ("A", date(2012, 7, 1)), ("A", date(2013, 7, 1)), ("B", date(2013, 1, 1))],
        "prd_key string, prd_start_dt date",
    )
    got = versions.transform(t.with_version_end_dates)
    expected = spark.createDataFrame(
        [("A", date(2011, 7, 1), date(2012, 6, 30)), ("A", date(2012, 7, 1), date(2013, 6, 30)),
         ("A", date(2013, 7, 1), None), ("B", date(2013, 1, 1), None)],
        "prd_key string, prd_start_dt date, prd_end_dt date",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("sales", "quantity", "price", "want_sales", "want_price"),
    [
        ("100", "2", "50", 100, 50),  # consistent: unchanged
        ("", "2", "50", 100, 50),  # S11 null sales
        ("-100", "2", "50", 100, 50),  # S11 negative sales
        ("0", "2", "50", 100, 50),  # S11 zero sales
        ("90", "2", "50", 100, 50),  # S11 sales != q*p
        ("100", "2", "-50", 100, 50),  # S11 uses |price|; S12 price from original sales
        ("100", "2", "", 100, 50),  # S12 null price; S11 keeps sales when price is null
        ("101", "2", "0", 0, 50),  # S11: q*|0| = 0; S12 price = 101 / 2 truncated
        ("", "2", "", None, None),  # nothing to repair from
        ("100", "0", "", 100, None),  # S12 quantity 0 → price NULL
    ],
)
def test_sales_and_price_repair_s11_s12(spark, sales, quantity, price, want_sales, want_price):
    cols = "sls_ord_num, sls_prd_key, sls_cust_id, sls_order_dt, sls_ship_dt, sls_due_dt, sls_sales, sls_quantity, sls_price"
    df = bronze(spark, cols, [("SO1", "BK-1", "11000", "20101229", "20110105", "20110110", sales, quantity, price)])
    row = df.transform(t.clean_crm_sales_details).collect()[0]
    assert (row["sls_sales"], row["sls_price"]) == (want_sales, want_price)


def test_sales_dates_from_yyyymmdd_s10(spark):
    cols = "sls_ord_num, sls_prd_key, sls_cust_id, sls_order_dt, sls_ship_dt, sls_due_dt, sls_sales, sls_quantity, sls_price"
    df = bronze(spark, cols, [("SO1", " BK-1 ", "11000", "0", "32154", "20110110", "1", "1", "1"),
                              ("SO2", "BK-1", "11000", "20101229", "20101399", " 20110105", "1", "1", "1")])  # fmt: skip
    got = df.transform(t.clean_crm_sales_details).select(
        "sls_ord_num", "sls_prd_key", "sls_order_dt", "sls_ship_dt", "sls_due_dt"
    )
    expected = spark.createDataFrame(
        [("SO1", "BK-1", None, None, date(2011, 1, 10)), ("SO2", "BK-1", date(2010, 12, 29), None, date(2011, 1, 5))],
        "sls_ord_num string, sls_prd_key string, sls_order_dt date, sls_ship_dt date, sls_due_dt date",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_erp_customers_strip_nas_null_future_birthdates_map_gender_s13_s14_s15(spark):
    rows = [("NASAW00011000", "1971-10-06", " female"), ("AW00011001", "2030-01-01", "M"),
            ("AW00011002", "1916-02-10", "Male "), ("AW00011003", "", "x")]  # fmt: skip
    got = bronze(spark, "cid, bdate, gen", rows).transform(t.clean_erp_cust_az12).select("cid", "bdate", "gen")
    expected = spark.createDataFrame(
        [("AW00011000", date(1971, 10, 6), "Female"), ("AW00011001", None, "Male"),
         ("AW00011002", date(1916, 2, 10), "Male"), ("AW00011003", None, "n/a")],
        "cid string, bdate date, gen string",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_locations_remove_dash_and_name_countries_s16_s17(spark):
    rows = [("AW-00011000", "DE"), ("AW-00011001", " USA"), ("AW-00011002", "US"), ("AW-00011003", ""),
            ("AW-00011004", None), ("AW-00011005", " Germany ")]  # fmt: skip
    got = bronze(spark, "cid, cntry", rows).transform(t.clean_erp_loc_a101).select("cid", "cntry")
    expected = spark.createDataFrame(
        [("AW00011000", "Germany"), ("AW00011001", "United States"), ("AW00011002", "United States"),
         ("AW00011003", "n/a"), ("AW00011004", "n/a"), ("AW00011005", "Germany")],
        "cid string, cntry string",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_categories_pass_through_trimmed_s18(spark):
    got = bronze(spark, "id, cat, subcat, maintenance", [("AC_BR", "Accessories ", "Bike Racks", "Yes")])
    got = got.transform(t.clean_erp_px_cat_g1v2).select("id", "cat", "subcat", "maintenance")
    expected = spark.createDataFrame(
        [("AC_BR", "Accessories", "Bike Racks", "Yes")], "id string, cat string, subcat string, maintenance string"
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_latest_per_key_keeps_the_newest_version_s2(spark):
    df = spark.createDataFrame(
        [(1, date(2020, 1, 1), date(2024, 1, 1), 2), (1, date(2021, 1, 1), date(2024, 1, 1), 3),
         (1, None, date(2024, 1, 2), 2), (2, date(2020, 1, 1), date(2024, 1, 1), 4)],
        "cst_id int, cst_create_date date, _batch_date date, _line_number long",
    )  # fmt: skip
    recency = ("coalesce({a}cst_create_date, DATE'0001-01-01')", "{a}_batch_date", "{a}_line_number")
    got = df.transform(t.latest_per_key(keys=("cst_id",), recency=recency)).select("cst_id", "_line_number")
    expected = spark.createDataFrame([(1, 3), (2, 4)], "cst_id int, _line_number long")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_newest_per_key_is_the_latest_of_the_union_of_both_sides(spark):
    """The merge plan's one-join newest-of-two (S2 against the stored rows) gives what the ranking
    window gives over the union: the newer row per key, a key of one side only kept (full) or only
    the input's keys (left), NULL recency parts losing to a date."""
    recency = ("coalesce({a}cst_create_date, DATE'0001-01-01')", "{a}_batch_date", "{a}_line_number")
    schema = "cst_id int, cst_firstname string, cst_create_date date, _batch_date date, _line_number long"
    batch = spark.createDataFrame(
        [(1, "new", date(2020, 1, 1), date(2024, 1, 2), 2),  # newer batch than the stored row
         (2, "new", date(2020, 1, 1), date(2024, 1, 2), 3),  # older create date than the stored row
         (3, "new", None, date(2024, 1, 2), 4),  # no create date: loses to a dated row
         (4, "new", date(2020, 1, 1), date(2024, 1, 2), 5)],  # batch only
        schema,
    )  # fmt: skip
    stored = spark.createDataFrame(
        [(1, "old", date(2020, 1, 1), date(2024, 1, 1), 9),
         (2, "old", date(2021, 1, 1), date(2024, 1, 1), 8),
         (3, "old", date(2019, 1, 1), date(2024, 1, 1), 7),
         (5, "old", date(2019, 1, 1), date(2024, 1, 1), 6)],  # stored only
        schema,
    )  # fmt: skip
    columns = batch.columns
    for keep_other_keys in (True, False):
        got = batch.transform(
            t.newest_per_key(
                stored, keys=("cst_id",), recency=recency, columns=columns, keep_other_keys=keep_other_keys
            )
        )
        union = batch.unionByName(
            stored if keep_other_keys else stored.join(batch.select("cst_id"), "cst_id", "left_semi")
        )
        expected = union.transform(t.latest_per_key(keys=("cst_id",), recency=recency, columns=columns))
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
        names = {r.cst_id: r.cst_firstname for r in got.collect()}
        assert names == {1: "new", 2: "old", 3: "old", 4: "new", **({5: "old"} if keep_other_keys else {})}


def test_newest_per_key_pairs_composite_keys_as_the_merge_does_and_keeps_the_input_on_a_tie(spark):
    """Product versions are keyed on (prd_key, prd_start_dt): both parts must be equal, and a NULL
    part pairs with nothing (as in the MERGE's ``t.k = s.k``), so both such rows stay; on equal
    recency the input's row is kept."""
    schema = "prd_key string, prd_start_dt date, prd_cost int, _batch_date date, _line_number long"
    batch = spark.createDataFrame([("A", None, 2, date(2024, 1, 2), 2), ("A", D, 2, date(2024, 1, 1), 3)], schema)
    stored = spark.createDataFrame(
        [("A", None, 1, date(2024, 1, 1), 2), ("A", D, 1, date(2024, 1, 1), 3), ("B", D, 1, date(2024, 1, 1), 4)],
        schema,
    )
    recency = ("{a}_batch_date", "{a}_line_number")
    got = batch.transform(
        t.newest_per_key(stored, keys=("prd_key", "prd_start_dt"), recency=recency, columns=batch.columns)
    )
    rows = sorted((r.prd_key, r.prd_start_dt is None, r.prd_cost) for r in got.collect())
    assert rows == [("A", False, 2), ("A", True, 1), ("A", True, 2), ("B", False, 1)]
