"""Gold job: rebuild the star-schema rows that batch D touches and MERGE them in.

* customers whose CRM or ERP record changed in D → ``dim_customers``;
* products with a version (or category) delivered in D → every version of them → ``dim_products``
  (SCD2: the new version opens, the previous one closes, re-running changes nothing);
* sales lines that silver took from D, plus the lines of touched products and customers (their
  version or customer link may change) → ``fact_sales``.

Everything is keyed on natural keys and hashed surrogate keys, so re-runs and backfills in any
order converge to the same tables. BI views are published last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import dq
from spark_jobs.engine import materialize
from spark_jobs.gold.tables import DIM_CUSTOMERS, DIM_PRODUCTS, FACT_SALES, GOLD_TABLES, GOLD_VIEWS, GoldTable
from spark_jobs.metrics import METRICS_TABLE, write_metrics
from spark_jobs.settings import Settings
from spark_jobs.tables import TableStore, batch_predicate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldTableResult:
    table: str
    rows: int
    summary: str

    def __str__(self) -> str:
        return f"{self.table}: {self.rows} rows rebuilt and merged"


class _Gold:
    def __init__(self, spark: SparkSession, settings: Settings, run_date: date) -> None:
        self.store = TableStore(spark, settings)
        self.run_date = run_date
        self.recorded_at = datetime.now(UTC)
        self.metrics: list[tuple[object, ...]] = []

    def silver(self, name: str) -> DataFrame:
        return self.store.read(self.store.ref("silver", name))

    def gold(self, name: str) -> DataFrame:
        return self.store.read(self.store.ref("gold", name))

    def merge(self, table: GoldTable, source: DataFrame, *, rebuild: bool = False) -> GoldTableResult:
        """Check ``source`` against the table's expectations and MERGE it into ``gold.<name>`` on its
        keys; ``rebuild``: ``source`` is the whole table, which replaces the stored one (rows no
        longer derived from silver go)."""
        name, keys, expectations = table.name, table.keys, table.expectations
        source = materialize(source)  # built once, then checked and merged
        checked = source.transform(dq.check(expectations))
        target = self.store.ref("gold", name)
        # The checks and what the MERGE would do, in one query.
        query = dq.violations_query(checked, expectations, prefix="dq_")
        prepared = None if rebuild else self.store.prepare_merge(source, target, keys=keys, prefix="merge_")
        if prepared is not None and prepared.effect_query is not None:
            query = query.crossJoin(prepared.effect_query)
        row = query.first()
        assert row is not None
        counts = dq.counts_from_row(row, expectations, prefix="dq_")
        text = dq.summary(f"gold.{name}", counts.rows_in, counts.results)
        log.info("gold expectations\n%s", text)
        rows = dq.metrics_rows(
            run_date=self.run_date,
            layer="gold",
            table=name,
            results=counts.results,
            rows_in=counts.rows_in,
            quarantined=0,
            deduplicated=0,
            written=counts.rows_in,
            recorded_at=self.recorded_at,
        )
        self.metrics.extend(rows)
        breached = [r for r in counts.results if r.breached]
        if breached:
            samples = dq.sample_keys(checked, keys, breached)
            dq.raise_if_breached(
                f"gold.{name}",
                rows_in=counts.rows_in,
                results=counts.results,
                samples=samples,
                enforce=self.store.settings.dq_enforce,
            )
        if prepared is None:
            self.store.replace_slice(source, target, where="true")
        else:
            effect = prepared.effect(row) if prepared.effect_query is not None else None
            self.store.execute_merge(prepared, effect)
        return GoldTableResult(name, counts.rows_in, text)


def run_gold(spark: SparkSession, settings: Settings, run_date: date) -> list[GoldTableResult]:
    job = _Gold(spark, settings, run_date)
    tables = [*GOLD_TABLES, *GOLD_VIEWS, METRICS_TABLE]
    # One writer of the layer's tables from the first read to the last commit (see TableStore).
    with job.store.writing([job.store.ref("gold", name) for name in tables]):
        # A day gold has run before is a re-run (a clear, a reprocessing backfill) after its silver
        # batch may have been re-delivered: rows that silver dropped or moved to another batch are
        # not in the batch's slice any more, so gold is rebuilt in full from silver.
        metrics = job.store.ref("gold", METRICS_TABLE)
        rerun = job.store.exists(metrics) and not job.store.slice_is_empty(
            metrics, batch_predicate(run_date, "run_date")
        )
        try:
            results = _build(job, run_date, rebuild=rerun)
        finally:
            write_metrics(job.store, layer="gold", run_date=run_date, rows=job.metrics)
        publish_views(job.store, settings)
    for result in results:
        log.info("gold %s", result)
    return results


def _build(job: _Gold, run_date: date, *, rebuild: bool) -> list[GoldTableResult]:
    """Build what batch ``run_date`` touches and merge it in; ``rebuild``: every row, replacing the tables."""
    batch = "true" if rebuild else batch_predicate(run_date)
    cust, az12, loc = job.silver("crm_cust_info"), job.silver("erp_cust_az12"), job.silver("erp_loc_a101")
    prd, cats, sales = job.silver("crm_prd_info"), job.silver("erp_px_cat_g1v2"), job.silver("crm_sales_details")

    # Customers of this batch or whose ERP record is in it: one pass over the (unique) customers
    # with a lookup of the batch's ERP ids, so no de-duplication is needed.
    erp_ids = az12.filter(batch).select("cid").unionByName(loc.filter(batch).select("cid")).distinct()
    by_erp = erp_ids.select(F.col("cid").alias("_erp_cid"), F.lit(True).alias("_by_erp"))
    touched_customers = (
        cust.join(by_erp, cust.cst_key == by_erp._erp_cid, "left")
        .filter(F.expr(batch) | F.col("_by_erp").isNotNull())
        .drop("_erp_cid", "_by_erp")
    )
    # The touched sets and the sales lines are each used by two plans: computed once.
    touched_customers = materialize(touched_customers)
    results = [
        job.merge(
            DIM_CUSTOMERS, DIM_CUSTOMERS.build(touched_customers, demographics=az12, locations=loc), rebuild=rebuild
        )
    ]

    new_cats = cats.filter(batch).select(F.col("id").alias("cat_id"))
    touched_keys = materialize(
        prd.filter(batch)
        .select("prd_key")
        .unionByName(prd.join(new_cats, "cat_id", "left_semi").select("prd_key"))
        .distinct()
    )
    versions = prd.join(touched_keys, "prd_key", "left_semi")
    results.append(job.merge(DIM_PRODUCTS, DIM_PRODUCTS.build(versions, categories=cats), rebuild=rebuild))

    # Lines taken from this batch, plus the lines of touched products (their version may change)
    # and customers (their link may appear): one pass over sales with two small lookups.
    by_product = touched_keys.select(F.col("prd_key").alias("sls_prd_key"), F.lit(True).alias("_by_product"))
    by_customer = touched_customers.select(F.col("cst_id").alias("sls_cust_id"), F.lit(True).alias("_by_customer"))
    lines = materialize(
        sales.join(by_product, "sls_prd_key", "left")
        .join(by_customer, "sls_cust_id", "left")
        .filter(F.expr(batch) | F.col("_by_product").isNotNull() | F.col("_by_customer").isNotNull())
        .drop("_by_product", "_by_customer")
    )
    products = job.gold("dim_products").join(
        lines.select(F.col("sls_prd_key").alias("product_number")).distinct(), "product_number", "left_semi"
    )
    facts = FACT_SALES.build(lines, products=products, customers=job.gold("dim_customers"))
    results.append(job.merge(FACT_SALES, facts, rebuild=rebuild))
    return results


def publish_views(store: TableStore, settings: Settings) -> None:
    """On Unity Catalog: ``CREATE OR REPLACE VIEW`` over the gold tables. Locally (no catalog to
    hold a view): the same SQL over the local tables, its result stored as a Delta table of the
    view's name, rewritten every run.

    The local views are small aggregates and projections: the engine computes them, the result
    comes back as Arrow and the ``deltalake`` package overwrites the table in this process (one
    commit), at a fraction of an engine overwrite.
    """
    if settings.uses_catalog:
        for name, sql in view_sql(settings).items():
            store.spark.sql(f"CREATE OR REPLACE VIEW {settings.table('gold', name).full_name} AS {sql}")
        return
    from deltalake import write_deltalake

    for name, sql in view_sql(settings).items():
        ref = store.ref("gold", name)
        assert ref.path is not None
        write_deltalake(ref.path, store.spark.sql(sql).toArrow(), mode="overwrite", schema_mode="overwrite")


def view_sql(settings: Settings) -> dict[str, str]:
    """Each BI view's SQL (``gold/tables.py``) over this target's gold tables."""
    tables = {name: settings.table("gold", name).sql for name in GOLD_TABLES}
    return {name: view.render(tables) for name, view in GOLD_VIEWS.items()}
