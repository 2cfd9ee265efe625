"""Pure transforms that build the star schema from silver.

Surrogate keys are 64-bit hashes of the natural key (``xxhash64``): stable across runs and
independent of the order batches are processed in (a sequence assigned at arrival would differ
between an in-order run and a backfill). A collision would break key uniqueness, which the gold
job checks as a ``fail`` expectation.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def customer_key(cst_id: Column) -> Column:
    return F.xxhash64(F.lit("customer"), cst_id.cast("int"))


def product_key(prd_key: Column, valid_from: Column) -> Column:
    return F.xxhash64(F.lit("product"), prd_key, valid_from.cast("date"))


def build_dim_customers(cust: DataFrame, *, demographics: DataFrame, locations: DataFrame) -> DataFrame:
    """One row per CRM customer, enriched from ERP on ``cst_key = cid``: ``demographics``
    (``erp_cust_az12``) and ``locations`` (``erp_loc_a101``).

    Gender: CRM unless ``n/a``, then ERP, else ``n/a``. Birthdate and country from ERP.
    """
    erp = demographics.select(F.col("cid").alias("_az_cid"), "bdate", "gen")
    location = locations.select(F.col("cid").alias("_loc_cid"), "cntry")
    gender = F.when(F.col("cst_gndr") != "n/a", F.col("cst_gndr")).otherwise(F.coalesce(F.col("gen"), F.lit("n/a")))
    return (
        cust.join(erp, cust.cst_key == erp._az_cid, "left")
        .join(location, cust.cst_key == location._loc_cid, "left")
        .select(
            customer_key(F.col("cst_id")).alias("customer_key"),
            F.col("cst_id").alias("customer_id"),
            F.col("cst_key").alias("customer_number"),
            F.col("cst_firstname").alias("first_name"),
            F.col("cst_lastname").alias("last_name"),
            F.coalesce(F.col("cntry"), F.lit("n/a")).alias("country"),
            F.col("cst_marital_status").alias("marital_status"),
            gender.alias("gender"),
            F.col("bdate").alias("birthdate"),
            F.col("cst_create_date").alias("create_date"),
        )
    )


def build_dim_products(versions: DataFrame, *, categories: DataFrame) -> DataFrame:
    """SCD Type 2: one row per product cost version with its validity interval.

    ``versions`` must hold every version of each product it contains (silver computes
    ``prd_end_dt`` from the next version). Categories missing from the ERP list are kept as NULLs.
    """
    cats = categories.select(F.col("id").alias("_cat_id"), "cat", "subcat", "maintenance")
    return versions.join(cats, versions.cat_id == cats._cat_id, "left").select(
        product_key(F.col("prd_key"), F.col("prd_start_dt")).alias("product_key"),
        F.col("prd_id").alias("product_id"),
        F.col("prd_key").alias("product_number"),
        F.col("prd_nm").alias("product_name"),
        F.col("cat_id").alias("category_id"),
        F.col("cat").alias("category"),
        F.col("subcat").alias("subcategory"),
        F.col("maintenance"),
        F.col("prd_cost").alias("cost"),
        F.col("prd_line").alias("product_line"),
        F.col("prd_start_dt").alias("valid_from"),
        F.col("prd_end_dt").alias("valid_to"),
        F.col("prd_end_dt").isNull().alias("is_current"),
    )


def build_fact_sales(sales: DataFrame, *, products: DataFrame, customers: DataFrame) -> DataFrame:
    """One row per sales line, linked to the customer and to the product version valid on the order
    date. An order dated before the product's first version, or without a valid order date, is
    linked to the earliest version and flagged ``product_version_fallback``; an unknown product or
    customer leaves its key NULL (counted by expectations), so no line is lost."""
    versions = products.select(
        F.col("product_number").alias("_pn"),
        F.col("product_key").alias("_pk"),
        F.col("valid_from").alias("_from"),
        F.col("valid_to").alias("_to"),
    )
    first = (
        products.select(
            F.col("product_number").alias("_first_pn"),
            F.col("product_key").alias("_first_pk"),
            F.row_number().over(Window.partitionBy("product_number").orderBy("valid_from")).alias("_version_no"),
        )
        .filter("_version_no = 1")
        .drop("_version_no")
    )
    order_dt = F.col("sls_order_dt")
    in_range = (order_dt >= F.col("_from")) & (F.col("_to").isNull() | (order_dt <= F.col("_to")))
    # Versions of a product do not overlap (each ends the day before the next starts), so a line
    # matches at most one version on its order date; two lookups instead of a ranking window.
    linked = sales.join(versions, (sales.sls_prd_key == versions._pn) & in_range, "left").join(
        first, sales.sls_prd_key == first._first_pn, "left"
    )
    exact = F.col("_pk").isNotNull()
    known = customers.select(F.col("customer_id").alias("_cid"), F.col("customer_key").alias("_ck"))
    return linked.join(known, linked.sls_cust_id == known._cid, "left").select(
        F.col("sls_ord_num").alias("order_number"),
        F.col("sls_prd_key").alias("product_number"),
        F.coalesce(F.col("_pk"), F.col("_first_pk")).alias("product_key"),
        F.col("sls_cust_id").alias("customer_id"),
        F.col("_ck").alias("customer_key"),
        order_dt.alias("order_date"),
        F.col("sls_ship_dt").alias("shipping_date"),
        F.col("sls_due_dt").alias("due_date"),
        F.col("sls_sales").alias("sales_amount"),
        F.col("sls_quantity").alias("quantity"),
        F.col("sls_price").alias("price"),
        (~exact & F.col("_first_pk").isNotNull()).alias("product_version_fallback"),
    )
