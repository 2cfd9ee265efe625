"""bronze → silver → gold on generated multi-day exports, with real Delta tables.

Proves: the conservation law, identical tables on re-run, the same final state when days are
back-filled out of order, no duplicate facts from re-delivered files, SCD2 maintenance, DQ
metrics, and a failing expectation stopping the job with a readable summary.
"""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_jobs.errors import DataQualityError
from spark_jobs.gold.job import view_sql
from spark_jobs.pipeline import run_layers
from spark_jobs.settings import Settings
from spark_jobs.tables import TableStore

pytestmark = pytest.mark.delta

START = date(2014, 1, 29)
DAYS = [START + timedelta(days=i) for i in range(5)]
SILVER = ("crm_cust_info", "crm_prd_info", "crm_sales_details", "erp_cust_az12", "erp_loc_a101", "erp_px_cat_g1v2")
GOLD = ("dim_customers", "dim_products", "fact_sales", "sales_monthly_by_category_country", "product_cost_history")


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """Four daily increments after the history; the last one also re-delivers the previous file."""
    from spark_jobs.sample_data import generate

    root = tmp_path_factory.mktemp("landing")
    generate(root, scale=0.01, start_date=START, days=len(DAYS) - 1, seed=11)
    last, previous = (root / d.isoformat() / "source_crm" / "sales_details.csv" for d in DAYS[-1:-3:-1])
    lines = previous.read_bytes().rstrip(b"\r\n").split(b"\r\n")[1:]
    last.write_bytes(last.read_bytes().rstrip(b"\r\n") + b"\r\n" + b"\r\n".join(lines) + b"\r\n")
    return root


def _settings(landing: Path, tables: Path) -> Settings:
    return Settings.from_env({"LAKEHOUSE_LANDING_ROOT": str(landing), "LAKEHOUSE_ROOT": str(tables)})


def snapshot(spark, settings: Settings) -> dict[str, list[tuple]]:
    store = TableStore(spark, settings)
    out = {}
    for layer, names in (("silver", SILVER), ("gold", GOLD)):
        for name in names:
            out[f"{layer}.{name}"] = sorted(tuple(r) for r in store.read(settings.table(layer, name)).collect())
    return out


@pytest.fixture(scope="module")
def in_order(spark, landing, tmp_path_factory):
    """The pipeline run day by day; per batch, the counts the conservation law speaks of."""
    settings = _settings(landing, tmp_path_factory.mktemp("in_order"))
    store = TableStore(spark, settings)
    accounts = {}
    for day in DAYS:
        run_layers(spark, settings, day)
        batch = F.col("_batch_date") == F.lit(day)
        metrics = store.read(settings.table("silver", "dq_metrics")).filter(
            (F.col("run_date") == F.lit(day)) & (F.col("expectation") == "*")
        )
        superseded = {r["table_name"]: r["deduplicated"] for r in metrics.collect()}
        for name in SILVER:
            accounts[(name, day)] = (
                store.read(settings.table("bronze", name)).filter(batch).count(),
                store.read(settings.table("silver", name)).filter(batch).count(),
                store.read(settings.table("silver", name + "_quarantine")).filter(batch).count(),
                superseded[name],
            )
    return settings, accounts


def test_conservation_law_every_bronze_row_is_in_silver_quarantine_or_superseded(in_order):
    _, accounts = in_order
    for (name, day), (bronze, silver, quarantined, superseded) in accounts.items():
        assert bronze == silver + quarantined + superseded, (name, day)
    assert sum(a[2] for a in accounts.values()) > 0  # the data did have rows to quarantine
    assert sum(a[3] for a in accounts.values()) > 0  # ... and duplicates to supersede


def test_rerunning_a_date_gives_identical_tables(spark, in_order):
    settings, _ = in_order
    before = snapshot(spark, settings)
    run_layers(spark, settings, DAYS[2])
    assert snapshot(spark, settings) == before


def test_a_source_not_delivered_on_a_day_leaves_its_silver_tables_as_they_were(spark, landing, in_order, tmp_path):
    """A table whose source has no file for the day (and none delivered before for it) is neither
    read nor written by silver's run of that day: planning it asks nothing of the engine, no commit
    to it or its quarantine, and zero counts in ``dq_metrics``."""
    from deltalake import DeltaTable

    from bench.roundtrips import counting_inside
    from spark_jobs.landing import find_source_file
    from spark_jobs.silver import job as silver_job
    from spark_jobs.sources import SOURCES

    settings, _ = in_order
    day = DAYS[2]
    missing = [name for name in SILVER if find_source_file(settings, SOURCES[name], day) is None]
    assert "crm_prd_info" in missing and "erp_cust_az12" in missing and "crm_cust_info" not in missing
    tables = tmp_path / "tables"
    shutil.copytree(settings.lakehouse_root, tables)
    copy = _settings(landing, tables)
    paths = [copy.table("silver", n + suffix).path for n in missing for suffix in ("", "_quarantine")]
    versions = {path: DeltaTable(path).version() for path in paths}

    with counting_inside(silver_job._table_plan) as planning:
        results = silver_job.run_silver(spark, copy, day, tables=missing)

    assert planning == {}  # (a table with rows: its planned rows fetched, at least)

    assert {path: DeltaTable(path).version() for path in paths} == versions
    by_table = {r.table: r for r in results}
    assert all(by_table[n].rows_in == by_table[n].written == 0 for n in missing)
    metrics = TableStore(spark, copy).read(copy.table("silver", "dq_metrics"))
    rows = metrics.filter((F.col("run_date") == F.lit(day)) & (F.col("expectation") == "*")).collect()
    assert {r["table_name"]: r["rows_in"] for r in rows if r["table_name"] in missing} == dict.fromkeys(missing, 0)


def test_backfill_out_of_order_gives_the_same_final_state(spark, landing, in_order, tmp_path):
    settings = _settings(landing, tmp_path / "tables")
    for day in [DAYS[0], DAYS[4], DAYS[2], DAYS[1], DAYS[3]]:
        run_layers(spark, settings, day)
    assert snapshot(spark, settings) == snapshot(spark, in_order[0])


def test_redelivered_files_and_duplicate_lines_do_not_duplicate_facts(spark, in_order):
    settings, _ = in_order
    store = TableStore(spark, settings)
    bronze = store.read(settings.table("bronze", "crm_sales_details"))
    quarantined = store.read(settings.table("silver", "crm_sales_details_quarantine"))
    keys = ["sls_ord_num", "sls_prd_key"]
    delivered = bronze.select(*keys).distinct().subtract(quarantined.select(*keys).distinct()).count()
    facts = store.read(settings.table("gold", "fact_sales"))
    assert bronze.count() > bronze.select(*keys).distinct().count()  # duplicates were delivered
    assert facts.count() == facts.select("order_number", "product_number").distinct().count() == delivered


def test_new_product_version_closes_the_previous_one(spark, in_order):
    settings, _ = in_order
    store = TableStore(spark, settings)
    new_versions = store.read(settings.table("silver", "crm_prd_info")).filter(F.col("_batch_date") > F.lit(START))
    changed = {r["prd_key"]: r["prd_start_dt"] for r in new_versions.collect()}
    assert changed, "the increments should bring new cost versions"
    dim = store.read(settings.table("gold", "dim_products"))
    for product, start in changed.items():
        versions = dim.filter(F.col("product_number") == product).orderBy("valid_from").collect()
        assert sum(v["is_current"] for v in versions) == 1
        assert versions[-1]["valid_from"] == start and versions[-1]["valid_to"] is None
        for older, newer in itertools.pairwise(versions):
            assert older["valid_to"] == newer["valid_from"] - timedelta(days=1)
            assert not older["is_current"]


def test_facts_link_to_customers_and_the_product_version_of_the_order_date(spark, in_order):
    settings, _ = in_order
    store = TableStore(spark, settings)
    facts = store.read(settings.table("gold", "fact_sales")).alias("f")
    dim = store.read(settings.table("gold", "dim_products")).alias("p")
    linked = facts.filter("product_key IS NOT NULL AND NOT product_version_fallback").join(
        dim, F.col("f.product_key") == F.col("p.product_key")
    )
    outside = linked.filter(
        (F.col("order_date") < F.col("valid_from"))
        | (F.col("valid_to").isNotNull() & (F.col("order_date") > F.col("valid_to")))
    )
    assert linked.count() > 0 and outside.count() == 0
    assert facts.filter("customer_key IS NULL").count() < 0.01 * facts.count()


def test_dq_metrics_per_run_table_and_expectation(spark, in_order):
    settings, _ = in_order
    store = TableStore(spark, settings)
    silver = store.read(settings.table("silver", "dq_metrics")).filter(F.col("run_date") == F.lit(START))
    rows = {(r["table_name"], r["expectation"]): r for r in silver.collect()}
    assert {t for t, _ in rows} == set(SILVER)
    sales = rows[("crm_sales_details", "sales_equals_quantity_times_price")]
    assert sales["action"] == "quarantine" and sales["quarantined"] == sales["rows_in"] - sales["passed"]
    gold = store.read(settings.table("gold", "dq_metrics")).filter(F.col("run_date") == F.lit(START))
    names = {(r["table_name"], r["expectation"]) for r in gold.collect()}
    assert ("fact_sales", "product_version_on_order_date") in names and ("dim_products", "category_matched") in names


def test_views_for_bi(spark, in_order):
    settings, _ = in_order
    store = TableStore(spark, settings)
    monthly = store.read(settings.table("gold", "sales_monthly_by_category_country"))
    facts = store.read(settings.table("gold", "fact_sales")).filter("order_date IS NOT NULL")
    assert monthly.agg(F.sum("sales_amount")).first()[0] == facts.agg(F.sum("sales_amount")).first()[0]
    history = store.read(settings.table("gold", "product_cost_history"))
    assert history.count() == store.read(settings.table("gold", "dim_products")).count()
    # the local tables hold what the Unity Catalog views (SQL) show over the same gold tables
    for name, sql in view_sql(settings).items():
        local = store.read(settings.table("gold", name))
        assert [(f.name, f.dataType) for f in local.schema] == [(f.name, f.dataType) for f in spark.sql(sql).schema], (
            name
        )
        assert Counter(map(tuple, local.collect())) == Counter(map(tuple, spark.sql(sql).collect())), name


def test_expectation_breach_fails_the_job_with_summary_and_writes_nothing(spark, tmp_path):
    settings = _settings(tmp_path / "in", tmp_path / "tables")
    folder = Path(settings.landing_dir(START)) / "source_crm"
    folder.mkdir(parents=True)
    header = "sls_ord_num,sls_prd_key,sls_cust_id,sls_order_dt,sls_ship_dt,sls_due_dt,sls_sales,sls_quantity,sls_price"
    good = [f"SO{i},BK-1,11000,20101229,20110105,20110110,10,1,10" for i in range(18)]
    bad = ["SO90,BK-1,11000,20101229,20110105,20110110,,1,", "SO91,BK-1,11000,20101229,20110105,20110110,,2,"]
    (folder / "sales_details.csv").write_text("\r\n".join([header, *good, *bad]) + "\r\n")
    run_layers(spark, settings, START, ["bronze"])

    with pytest.raises(DataQualityError) as excinfo:
        run_layers(spark, settings, START, ["silver"])

    message = str(excinfo.value)
    assert (
        "expectation 'sales_equals_quantity_times_price' [quarantine] failed on 2 of 20 rows (limit 5.00%)" in message
    )
    assert "SO90/BK-1 (line 20)" in message and "crm_sales_details: 20 rows in" in message
    store = TableStore(spark, settings)
    assert not store.exists(settings.table("silver", "crm_sales_details"))
    metrics = store.read(settings.table("silver", "dq_metrics")).filter(
        "expectation = 'sales_equals_quantity_times_price'"
    )
    assert metrics.first()["quarantined"] == 2
