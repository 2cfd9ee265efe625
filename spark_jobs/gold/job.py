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

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from spark_jobs import dq
from spark_jobs.engine import fetch_one, is_local_relation, materialize, schemas_of
from spark_jobs.errors import DataQualityError, SchemaMismatchError
from spark_jobs.gold.tables import DIM_CUSTOMERS, DIM_PRODUCTS, FACT_SALES, GOLD_TABLES, GOLD_VIEWS, GoldTable
from spark_jobs.metrics import METRICS_TABLE, write_metrics
from spark_jobs.settings import Settings
from spark_jobs.table_homes import View
from spark_jobs.tables import PreparedMerge, TableStore, batch_predicate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldTableResult:
    table: str
    rows: int
    summary: str

    def __str__(self) -> str:
        return f"{self.table}: {self.rows} rows rebuilt and merged"


@dataclass
class _TablePlan:
    """One gold table's rows, computed, and what checking and writing them takes: the one-row
    ``query`` of its expectations and merge effect (columns named after ``prefix``)."""

    table: GoldTable
    source: DataFrame
    checked: DataFrame
    prepared: PreparedMerge | None  # None: ``source`` replaces the whole table (a rebuild)
    prefix: str
    query: DataFrame
    schema: StructType | None = None  # the source's, once fetched with the checks


class _Gold:
    def __init__(self, spark: SparkSession, settings: Settings, run_date: date) -> None:
        self.store = TableStore(spark, settings)
        self.run_date = run_date
        self.recorded_at = datetime.now(UTC)
        self.metrics: list[tuple[object, ...]] = []
        self.planned: list[_TablePlan] = []

    def silver(self, name: str) -> DataFrame:
        return self.store.read(self.store.ref("silver", name))

    def gold(self, name: str) -> DataFrame:
        return self.store.read(self.store.ref("gold", name))

    def plan(self, table: GoldTable, source: DataFrame, *, rebuild: bool, prefix: str) -> _TablePlan:
        """Plan checking ``source`` (computed) against the table's expectations and merging it into
        ``gold.<name>`` on its keys; ``rebuild``: ``source`` is the whole table, which replaces the
        stored one (rows no longer derived from silver go)."""
        checked = source.transform(dq.check(table.expectations))
        target = self.store.ref("gold", table.name)
        query = dq.violations_query(checked, table.expectations, prefix=f"{prefix}dq_")
        prepared = None
        if not rebuild:
            # The table's columns, from its stored schema (no round trip): the source's schema is
            # checked against it when the checks are fetched, before anything is written.
            stored = self.store.stored_schema(target)
            columns = stored.fieldNames() if stored is not None else None
            prepared = self.store.prepare_merge(
                source, target, keys=table.keys, prefix=f"{prefix}merge_", columns=columns
            )
            if prepared.effect_query is not None:
                query = query.crossJoin(prepared.effect_query)
        plan = _TablePlan(table, source, checked, prepared, prefix, query)
        self.planned.append(plan)
        return plan

    def after_merge(self, plan: _TablePlan) -> DataFrame:
        """The table as it will be once ``plan`` is written (MERGE on the keys, or a rebuild)."""
        if plan.prepared is None or plan.prepared.stored is None:
            return plan.source
        keys = list(plan.table.keys)
        kept = plan.prepared.stored.join(plan.source.select(*keys), keys, "left_anti")
        return kept.unionByName(plan.source)

    def fetch(self, plans: list[_TablePlan]) -> Mapping[str, Any]:
        """Every plan's checks and merge effect in one query, with the sources' schemas (checked
        against the tables' before anything is written)."""
        query = functools.reduce(DataFrame.crossJoin, [p.query for p in plans])
        row, schemas = fetch_one(query, probes=[p.source for p in plans])
        for plan, schema in zip(plans, schemas, strict=True):
            self.store.check_schema(self.store.ref("gold", plan.table.name), schema)
            plan.schema = schema
        return row

    def explain_failure(self) -> None:
        """After a failed query: raise :class:`SchemaMismatchError` if a planned source does not
        match its table (a table whose stored columns the plans used, so that a column it lacks
        failed a query), else return (the caller re-raises)."""
        for plan in self.planned:
            try:
                (schema,) = schemas_of([plan.source])
            except Exception:  # this plan cannot be analysed either: the failure is its own
                continue
            self.store.check_schema(self.store.ref("gold", plan.table.name), schema)

    def decide(self, plan: _TablePlan, row: Mapping[str, Any]) -> GoldTableResult:
        """Record the table's dq_metrics rows and raise on a breached expectation (enforced)."""
        table, name = plan.table, plan.table.name
        counts = dq.counts_from_row(row, table.expectations, prefix=f"{plan.prefix}dq_")
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
            samples = dq.sample_keys(plan.checked, table.keys, breached)
            dq.raise_if_breached(
                f"gold.{name}",
                rows_in=counts.rows_in,
                results=counts.results,
                samples=samples,
                enforce=self.store.settings.dq_enforce,
            )
        return GoldTableResult(name, counts.rows_in, text)

    def write(self, plan: _TablePlan, row: Mapping[str, Any]) -> None:
        target = self.store.ref("gold", plan.table.name)
        if plan.prepared is None:
            self.store.replace_slice(plan.source, target, where="true", schema=plan.schema)
            return
        effect = plan.prepared.effect(row) if plan.prepared.effect_query is not None else None
        self.store.execute_merge(plan.prepared, effect, schema=plan.schema)


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
            try:
                results = _build(job, run_date, rebuild=rerun)
            except (DataQualityError, SchemaMismatchError):
                raise
            except Exception:
                job.explain_failure()  # a schema drift fails the plans first: say so
                raise
        finally:
            write_metrics(job.store, layer="gold", run_date=run_date, rows=job.metrics)
        publish_views(job.store, settings)
    for result in results:
        log.info("gold %s", result)
    return results


def _build(job: _Gold, run_date: date, *, rebuild: bool) -> list[GoldTableResult]:
    """Build what batch ``run_date`` touches, check all of it in one query, then merge it in;
    ``rebuild``: every row, replacing the tables."""
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
    # The touched sets are each used by two plans: computed once.
    # A batch's touched sets are small (held in the plans when they are); a rebuild's are everything.
    touched_customers = materialize(touched_customers, small=not rebuild)
    new_cats = cats.filter(batch).select(F.col("id").alias("cat_id"))
    touched_keys = materialize(
        prd.filter(batch)
        .select("prd_key")
        .unionByName(prd.join(new_cats, "cat_id", "left_semi").select("prd_key"))
        .distinct(),
        small=not rebuild,
    )
    small = is_local_relation(touched_customers) and is_local_relation(touched_keys)
    customers = job.plan(
        DIM_CUSTOMERS,
        materialize(DIM_CUSTOMERS.build(touched_customers, demographics=az12, locations=loc), small=small),
        rebuild=rebuild,
        prefix="c_",
    )
    versions = prd.join(touched_keys, "prd_key", "left_semi")
    products = job.plan(
        DIM_PRODUCTS,
        materialize(DIM_PRODUCTS.build(versions, categories=cats), small=small),
        rebuild=rebuild,
        prefix="p_",
    )

    # Lines taken from this batch, plus the lines of touched products (their version may change)
    # and customers (their link may appear): one pass over sales with two small lookups. They are
    # linked to the dimensions as they will be once merged, so that the three tables are checked
    # together before any of them is written.
    by_product = touched_keys.select(F.col("prd_key").alias("sls_prd_key"), F.lit(True).alias("_by_product"))
    by_customer = touched_customers.select(F.col("cst_id").alias("sls_cust_id"), F.lit(True).alias("_by_customer"))
    lines = (
        sales.join(by_product, "sls_prd_key", "left")
        .join(by_customer, "sls_cust_id", "left")
        .filter(F.expr(batch) | F.col("_by_product").isNotNull() | F.col("_by_customer").isNotNull())
        .drop("_by_product", "_by_customer")
    )
    facts = FACT_SALES.build(lines, products=job.after_merge(products), customers=job.after_merge(customers))
    plans = [customers, products, job.plan(FACT_SALES, materialize(facts, small=small), rebuild=rebuild, prefix="f_")]
    row = job.fetch(plans)
    results = [job.decide(plan, row) for plan in plans]
    for plan in plans:
        job.write(plan, row)
    return results


def publish_views(store: TableStore, settings: Settings) -> None:
    """The BI views over the gold tables: on Unity Catalog ``CREATE OR REPLACE VIEW``; locally
    (no catalog to hold a view) the same SQL's rows stored as a Delta table of the view's name,
    computed again when an input changed (``TableHome.publish_views``)."""
    sql = view_sql(settings)
    views = {
        store.ref("gold", name): View(sql[name], tuple(store.ref("gold", table) for table in view.inputs))
        for name, view in GOLD_VIEWS.items()
    }
    store.publish_views(views)


def view_sql(settings: Settings) -> dict[str, str]:
    """Each BI view's SQL (``gold/tables.py``) over this target's gold tables."""
    tables = {name: settings.table("gold", name).sql for name in GOLD_TABLES}
    return {name: view.render(tables) for name, view in GOLD_VIEWS.items()}
