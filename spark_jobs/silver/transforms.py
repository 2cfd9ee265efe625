"""Pure cleaning transforms, one per source table (rules S1–S18 of the silver spec).

Each takes the bronze rows of a batch (text columns + ingestion metadata) and returns the typed,
cleaned columns plus lineage (``_batch_date``, ``_line_number``) and ``_raw``, a struct of the
original text fields, so that a quarantined row keeps exactly what arrived.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.parsing import parse_int, parse_iso_date, parse_yyyymmdd
from spark_jobs.sources import SOURCES
from spark_jobs.write_plan import OTHER_PRESENT, OTHER_SAME

LINEAGE = ("_batch_date", "_line_number")
RAW = "_raw"


def _with_raw(bronze: DataFrame, table: str, *cleaned: Column) -> DataFrame:
    """The cleaned columns, lineage, and ``_raw``: the table's source fields as they arrived."""
    return bronze.select(*cleaned, *LINEAGE, F.struct(*SOURCES[table].bronze_columns).alias(RAW))


def _code(col: str, mapping: dict[str, str], default: str = "n/a") -> Column:
    """``upper(trim(col))`` mapped through ``mapping``; anything else (blank, NULL, unknown) → default."""
    key = F.upper(F.trim(F.col(col)))
    expr = None
    for source, target in mapping.items():
        expr = F.when(key == source, F.lit(target)) if expr is None else expr.when(key == source, F.lit(target))
    assert expr is not None
    return expr.otherwise(F.lit(default))


def _text(col: str) -> Column:
    """Trimmed text; blank → NULL."""
    value = F.trim(F.col(col))
    return F.when(value == "", F.lit(None).cast("string")).otherwise(value)


def clean_crm_cust_info(bronze: DataFrame) -> DataFrame:
    """S1 (null ids are quarantined by expectation), S3 trim names, S4 marital status, S5 gender."""
    return _with_raw(
        bronze,
        "crm_cust_info",
        parse_int(F.col("cst_id")).alias("cst_id"),
        _text("cst_key").alias("cst_key"),
        _text("cst_firstname").alias("cst_firstname"),
        _text("cst_lastname").alias("cst_lastname"),
        _code("cst_marital_status", {"S": "Single", "M": "Married"}).alias("cst_marital_status"),
        _code("cst_gndr", {"F": "Female", "M": "Male"}).alias("cst_gndr"),
        parse_iso_date(F.col("cst_create_date")).alias("cst_create_date"),
    )


def clean_crm_prd_info(bronze: DataFrame) -> DataFrame:
    """S6 category id and product key, S7 null cost → 0, S8 product line, S9 start date.

    The source end date is unreliable and dropped here: :func:`with_version_end_dates` derives it
    from the next version once all versions of a product are known.
    """
    key = F.trim(F.col("prd_key"))
    return _with_raw(
        bronze,
        "crm_prd_info",
        parse_int(F.col("prd_id")).alias("prd_id"),
        F.regexp_replace(F.substring(key, 1, 5), "-", "_").alias("cat_id"),
        F.when(F.length(key) > 6, F.substring(key, 7, 1_000)).alias("prd_key"),
        _text("prd_nm").alias("prd_nm"),
        F.coalesce(parse_int(F.col("prd_cost")), F.lit(0)).alias("prd_cost"),
        _code("prd_line", {"M": "Mountain", "R": "Road", "S": "Other Sales", "T": "Touring"}).alias("prd_line"),
        parse_iso_date(F.col("prd_start_dt")).alias("prd_start_dt"),
    )


def with_version_end_dates(versions: DataFrame) -> DataFrame:
    """S9: a version ends the day before the next version of the same product starts; the current
    version (no next one) has a NULL end. ``versions`` must hold every version of its products."""
    nxt = F.lead("prd_start_dt").over(Window.partitionBy("prd_key").orderBy("prd_start_dt"))
    return versions.withColumn("prd_end_dt", F.date_sub(nxt, 1))


def clean_crm_sales_details(bronze: DataFrame) -> DataFrame:
    """S10 dates from yyyyMMdd, S11 repair sales, S12 repair price (both from the original values)."""
    quantity = parse_int(F.col("sls_quantity"))
    sales = parse_int(F.col("sls_sales"), "bigint")
    price = parse_int(F.col("sls_price"), "bigint")
    expected_sales = F.try_multiply(quantity.cast("bigint"), F.abs(price))
    fixed_sales = (
        F.when(price.isNull(), sales)
        .when(sales.isNull() | (sales <= 0) | (sales != expected_sales), expected_sales)
        .otherwise(sales)
    )
    derived_price = F.when(quantity != 0, (sales / quantity).cast("bigint"))
    fixed_price = F.when(price.isNull() | (price <= 0), derived_price).otherwise(price)
    return _with_raw(
        bronze,
        "crm_sales_details",
        _text("sls_ord_num").alias("sls_ord_num"),
        _text("sls_prd_key").alias("sls_prd_key"),
        parse_int(F.col("sls_cust_id")).alias("sls_cust_id"),
        parse_yyyymmdd(F.col("sls_order_dt")).alias("sls_order_dt"),
        parse_yyyymmdd(F.col("sls_ship_dt")).alias("sls_ship_dt"),
        parse_yyyymmdd(F.col("sls_due_dt")).alias("sls_due_dt"),
        fixed_sales.alias("sls_sales"),
        quantity.alias("sls_quantity"),
        fixed_price.alias("sls_price"),
    )


def clean_erp_cust_az12(bronze: DataFrame) -> DataFrame:
    """S13 strip ``NAS``, S14 birthdates after the batch date (the run date of the row's batch) →
    NULL, S15 gender."""
    cid = F.trim(F.col("cid"))
    bdate = parse_iso_date(F.col("bdate"))
    return _with_raw(
        bronze,
        "erp_cust_az12",
        F.when(cid.startswith("NAS"), F.substring(cid, 4, 1_000)).otherwise(cid).alias("cid"),
        F.when(bdate <= F.col("_batch_date"), bdate).alias("bdate"),
        _code("gen", {"F": "Female", "FEMALE": "Female", "M": "Male", "MALE": "Male"}).alias("gen"),
    )


def clean_erp_loc_a101(bronze: DataFrame) -> DataFrame:
    """S16 remove ``-`` from ids, S17 country names."""
    country = F.trim(F.col("cntry"))
    return _with_raw(
        bronze,
        "erp_loc_a101",
        F.regexp_replace(F.trim(F.col("cid")), "-", "").alias("cid"),
        F.when(country == "DE", F.lit("Germany"))
        .when(country.isin("US", "USA"), F.lit("United States"))
        .when(country.isNull() | (country == ""), F.lit("n/a"))
        .otherwise(country)
        .alias("cntry"),
    )


def clean_erp_px_cat_g1v2(bronze: DataFrame) -> DataFrame:
    """S18: passed through, trimmed, typed."""
    columns = SOURCES["erp_px_cat_g1v2"].bronze_columns
    return _with_raw(bronze, "erp_px_cat_g1v2", *[_text(c).alias(c) for c in columns])


def latest_per_key(
    *, keys: tuple[str, ...], recency: tuple[str, ...], columns: Sequence[str] | None = None
) -> Callable[[DataFrame], DataFrame]:
    """Keep the most recent row per key (``recency``: SQL expressions, greatest = newest), in the
    input's column order (``columns``, when the caller knows them: else asked of the engine).

    Duplicates are rare, so only the rows whose key occurs more than once go through the ranking
    window (a window over every row costs ~5x a grouping on the embedded engine).
    """

    def transform(df: DataFrame) -> DataFrame:
        dup_keys = df.groupBy(*keys).count().filter(F.col("count") > 1).select(*keys)
        unique_rows = df.join(dup_keys, list(keys), "left_anti")
        order = [F.expr(r.format(a="")).desc_nulls_last() for r in recency]
        rank = F.row_number().over(Window.partitionBy(*keys).orderBy(*order))
        ranked = df.join(dup_keys, list(keys), "left_semi").withColumn("_rank", rank)
        latest = ranked.filter(F.col("_rank") == 1).drop("_rank")
        return unique_rows.unionByName(latest).select(*(columns or df.columns))

    return transform


def newest_per_key(
    other: DataFrame,
    *,
    keys: tuple[str, ...],
    recency: tuple[str, ...],
    columns: Sequence[str],
    keep_other_keys: bool = True,
    compare_on: str | None = None,
) -> Callable[[DataFrame], DataFrame]:
    """The more recent (``recency``, greatest = newest) of the input's row and ``other``'s for each
    key, in ``columns``; both hold at most one row per key. ``keep_other_keys``: the keys only
    ``other`` has are kept too (a full join), else only the input's keys (a left join).

    ``compare_on`` (a column of ``columns``, such as the batch date): also say, from the same join,
    what writing the result over ``other`` would do: ``_other_present`` (the key has a row in
    ``other``), ``_other_same`` (the result is that row, every column equal, NULL-safe) and
    ``_other_<compare_on>`` (that row's value), so that no second join of the two is needed.

    One join, each side read once: the same result as :func:`latest_per_key` over the union of the
    two sides, with a fraction of its plan (which reads each side three times). On equal recency the
    input's row is kept. Keys match as in the ``MERGE`` (``t.k = s.k``): a key with a NULL part
    pairs with nothing (silver quarantines such rows before they get here).
    """

    def transform(df: DataFrame) -> DataFrame:
        mine = df.select(*columns, F.lit(True).alias("_mine")).alias("m")
        theirs = other.select(*columns, F.lit(True).alias("_theirs")).alias("o")
        on = functools.reduce(operator.and_, [F.col(f"m.{k}") == F.col(f"o.{k}") for k in keys])
        newer = F.expr(
            f"struct({', '.join(r.format(a='o.') for r in recency)}) > "
            f"struct({', '.join(r.format(a='m.') for r in recency)})"
        )
        present = F.col("o._theirs").isNotNull()
        take_theirs = present & (F.col("m._mine").isNull() | newer)
        joined = mine.join(theirs, on, "full" if keep_other_keys else "left")
        chosen = [F.when(take_theirs, F.col(f"o.{c}")).otherwise(F.col(f"m.{c}")).alias(c) for c in columns]
        if compare_on is None:
            return joined.select(*chosen)
        equal = functools.reduce(operator.and_, [F.col(f"m.{c}").eqNullSafe(F.col(f"o.{c}")) for c in columns])
        return joined.select(
            *chosen,
            present.alias(OTHER_PRESENT),
            (take_theirs | (present & equal)).alias(OTHER_SAME),
            F.col(f"o.{compare_on}").alias(f"_other_{compare_on}"),
        )

    return transform
