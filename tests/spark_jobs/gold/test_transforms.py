"""Star-schema transforms on inline rows (Sail and classic Spark)."""

from __future__ import annotations

from datetime import date

from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs.gold import transforms as g


def test_surrogate_keys_are_stable_hashes_identical_on_both_engines(spark):
    df = spark.createDataFrame([(11000, "BK-R93R-62", date(2011, 7, 1))], "id int, k string, d date")
    row = df.select(g.customer_key(F.col("id")).alias("c"), g.product_key(F.col("k"), F.col("d")).alias("p")).first()
    # Fixed values: keys must not change between runs, engines or releases (Databricks runs Spark).
    assert (row["c"], row["p"]) == (-2601886554389169450, 3691435825996213852)


def test_dim_customers_takes_gender_from_erp_only_when_crm_has_none(spark):
    cust = spark.createDataFrame(
        [(1, "AW1", "Jon", "Yang", "Married", "Male", date(2020, 1, 1)),
         (2, "AW2", "Ann", "Lee", "Single", "n/a", date(2020, 1, 2)),
         (3, "AW3", "Bo", "Ng", "Single", "n/a", date(2020, 1, 3))],
        "cst_id int, cst_key string, cst_firstname string, cst_lastname string, cst_marital_status string, "
        "cst_gndr string, cst_create_date date",
    )  # fmt: skip
    az12 = spark.createDataFrame(
        [("AW1", date(1970, 1, 1), "Female"), ("AW2", date(1980, 1, 1), "Female")], "cid string, bdate date, gen string"
    )
    loc = spark.createDataFrame([("AW1", "Germany")], "cid string, cntry string")
    got = g.build_dim_customers(cust, demographics=az12, locations=loc).select(
        "customer_id", "gender", "birthdate", "country"
    )
    expected = spark.createDataFrame(
        [(1, "Male", date(1970, 1, 1), "Germany"), (2, "Female", date(1980, 1, 1), "n/a"), (3, "n/a", None, "n/a")],
        "customer_id int, gender string, birthdate date, country string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def _versions(spark):
    return spark.createDataFrame(
        [(210, "CO_RF", "FR-1", "Frame", 10, "Road", date(2011, 7, 1), date(2012, 6, 30)),
         (211, "CO_RF", "FR-1", "Frame", 12, "Road", date(2012, 7, 1), None),
         (212, "CO_PE", "PE-1", "Pedal", 3, "n/a", date(2012, 1, 1), None)],
        "prd_id int, cat_id string, prd_key string, prd_nm string, prd_cost int, prd_line string, "
        "prd_start_dt date, prd_end_dt date",
    )  # fmt: skip


def test_dim_products_is_scd2_with_categories_and_unmatched_kept(spark):
    cats = spark.createDataFrame(
        [("CO_RF", "Components", "Road Frames", "Yes")], "id string, cat string, subcat string, maintenance string"
    )
    got = g.build_dim_products(_versions(spark), categories=cats).select(
        "product_id", "category", "cost", "valid_from", "valid_to", "is_current"
    )
    expected = spark.createDataFrame(
        [(210, "Components", 10, date(2011, 7, 1), date(2012, 6, 30), False),
         (211, "Components", 12, date(2012, 7, 1), None, True),
         (212, None, 3, date(2012, 1, 1), None, True)],
        "product_id int, category string, cost int, valid_from date, valid_to date, is_current boolean",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_fact_links_the_version_valid_on_the_order_date_or_falls_back_to_the_earliest(spark):
    cats = spark.createDataFrame([], "id string, cat string, subcat string, maintenance string")
    products = g.build_dim_products(_versions(spark), categories=cats)
    customers = spark.createDataFrame([(1, 101)], "customer_id int, customer_key long")
    sales = spark.createDataFrame(
        [("SO1", "FR-1", 1, date(2011, 8, 1)), ("SO2", "FR-1", 1, date(2013, 1, 1)), ("SO3", "FR-1", 1, date(2010, 1, 1)),
         ("SO4", "FR-1", 1, None), ("SO5", "XX-9", 1, date(2012, 1, 1)), ("SO6", "FR-1", 2, date(2012, 6, 30))],
        "sls_ord_num string, sls_prd_key string, sls_cust_id int, sls_order_dt date",
    ).select("*", *[F.lit(None).cast(t).alias(c) for c, t in [("sls_ship_dt", "date"), ("sls_due_dt", "date"),
             ("sls_sales", "bigint"), ("sls_quantity", "int"), ("sls_price", "bigint")]])  # fmt: skip
    keys = {r["product_id"]: r["product_key"] for r in products.collect()}
    got = g.build_fact_sales(sales, products=products, customers=customers).select(
        "order_number", "product_key", "customer_key", "product_version_fallback"
    )
    expected = spark.createDataFrame(
        [("SO1", keys[210], 101, False), ("SO2", keys[211], 101, False), ("SO3", keys[210], 101, True),
         ("SO4", keys[210], 101, True), ("SO5", None, 101, False), ("SO6", keys[210], None, False)],
        "order_number string, product_key long, customer_key long, product_version_fallback boolean",
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
