"""The gold layer's tables and BI views: the one place that says what gold holds.

Each table declares its merge keys, its data-quality expectations and the pure transform that
builds its rows (``gold/transforms.py``); the job (``gold/job.py``) decides which rows a batch
touches and writes them. Each BI view is one SQL text over the gold tables: on Unity Catalog it
becomes ``CREATE OR REPLACE VIEW``; locally (no catalog to hold a view) the same text is run over
the local Delta tables and its result stored as a table of the view's name.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame

from spark_jobs import dq
from spark_jobs.dq import Action, Expectation
from spark_jobs.gold import transforms as g


@dataclass(frozen=True)
class GoldTable:
    name: str
    keys: tuple[str, ...]
    expectations: tuple[Expectation, ...]
    build: Callable[..., DataFrame]  # pure: silver (and gold dimension) DataFrames in, the rows out


@dataclass(frozen=True)
class GoldView:
    name: str
    # SQL over the gold tables, named by ``{dim_customers}``, ``{dim_products}``, ``{fact_sales}``
    sql: str
    description: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """The gold tables the SQL reads (its ``{name}`` fields), in order of first use."""
        names = (field for _, field, _, _ in string.Formatter().parse(self.sql) if field)
        return tuple(dict.fromkeys(names))

    def render(self, tables: Mapping[str, str]) -> str:
        """The SQL with each gold table replaced by its SQL name (``catalog.schema.t`` or ``delta.`path```)."""
        return self.sql.format_map(tables)


DIM_CUSTOMERS = GoldTable(
    "dim_customers",
    keys=("customer_key",),
    expectations=(
        dq.unique("customer_key"),
        Expectation("customer_number_present", "customer_number IS NOT NULL", Action.WARN),
        Expectation("country_known", "country <> 'n/a'", Action.WARN),
    ),
    build=g.build_dim_customers,
)
DIM_PRODUCTS = GoldTable(
    "dim_products",
    keys=("product_key",),
    expectations=(
        dq.unique("product_key"),
        Expectation(
            "category_matched", "category IS NOT NULL", Action.WARN, description="cat_id not in erp_px_cat_g1v2"
        ),
        Expectation("valid_to_not_before_valid_from", "valid_to IS NULL OR valid_to >= valid_from", Action.FAIL),
    ),
    build=g.build_dim_products,
)
FACT_SALES = GoldTable(
    "fact_sales",
    keys=("order_number", "product_number"),
    expectations=(
        dq.unique("order_number", "product_number"),
        Expectation(
            "fact_customer_linked",
            "customer_key IS NOT NULL",
            Action.WARN,
            max_fraction=0.01,
            description="sales line whose customer is not in dim_customers",
        ),
        Expectation(
            "fact_product_linked",
            "product_key IS NOT NULL",
            Action.WARN,
            max_fraction=0.01,
            description="sales line whose product is not in dim_products",
        ),
        Expectation(
            "product_version_on_order_date",
            "NOT product_version_fallback",
            Action.WARN,
            description="order before the product's first version or without order date: linked to the earliest",
        ),
    ),
    build=g.build_fact_sales,
)
GOLD_TABLES: dict[str, GoldTable] = {t.name: t for t in (DIM_CUSTOMERS, DIM_PRODUCTS, FACT_SALES)}

GOLD_VIEWS: dict[str, GoldView] = {
    v.name: v
    for v in (
        GoldView(
            "sales_monthly_by_category_country",
            """
            SELECT trunc(f.order_date, 'month') AS order_month, coalesce(p.category, 'n/a') AS category,
                   coalesce(c.country, 'n/a') AS country, count(DISTINCT f.order_number) AS orders,
                   CAST(sum(f.quantity) AS BIGINT) AS quantity, CAST(sum(f.sales_amount) AS BIGINT) AS sales_amount
            FROM {fact_sales} f
            LEFT JOIN {dim_products} p ON f.product_key = p.product_key
            LEFT JOIN {dim_customers} c ON f.customer_key = c.customer_key
            WHERE f.order_date IS NOT NULL
            GROUP BY 1, 2, 3""",
            "sales per order month, product category and customer country",
        ),
        GoldView(
            "product_cost_history",
            """
            SELECT product_number, product_name, category, subcategory, cost, valid_from, valid_to, is_current
            FROM {dim_products}""",
            "every cost version of every product",
        ),
    )
}
