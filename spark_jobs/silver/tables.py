"""The silver tables: key, recency, cleaning transform and expectations of each.

``recency`` lists SQL expressions (``{a}`` is the table alias in a MERGE, empty elsewhere) that
order versions of a key: the greatest wins, whatever order the batches are processed in, so
re-runs and backfills converge to the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame

from spark_jobs.dq import Action, Expectation
from spark_jobs.silver import transforms as t

LATEST_DELIVERY = ("{a}_batch_date", "{a}_line_number")


@dataclass(frozen=True)
class SilverTable:
    name: str
    clean: Callable[[DataFrame], DataFrame]  # bronze rows of any batches → cleaned (reads `_batch_date`)
    keys: tuple[str, ...]
    recency: tuple[str, ...]
    expectations: Callable[[date], tuple[Expectation, ...]]  # on cleaned rows, before de-duplication
    output_expectations: tuple[Expectation, ...] = ()  # on what is merged into the table
    versioned: bool = False  # product versions: end dates are recomputed across all versions


def _present(col: str, what: str) -> Expectation:
    return Expectation(f"{col}_present", f"{col} IS NOT NULL", Action.QUARANTINE, description=f"{what} is missing")


def _valid(col: str, what: str, action: Action = Action.QUARANTINE) -> Expectation:
    return Expectation(
        f"{col}_valid",
        f"{col} IS NOT NULL OR {t.RAW}.{col} IS NULL OR trim({t.RAW}.{col}) = ''",
        action,
        description=f"{what} does not parse",
    )


def _cust(run_date: date) -> tuple[Expectation, ...]:
    return (
        Expectation(
            "cst_id_present", "cst_id IS NOT NULL", Action.QUARANTINE, description="cst_id missing or not an integer"
        ),
        Expectation("cst_key_present", "cst_key IS NOT NULL", Action.WARN),
        _valid("cst_create_date", "create date (yyyy-MM-dd)", Action.WARN),
    )


def _prd(run_date: date) -> tuple[Expectation, ...]:
    return (
        Expectation(
            "prd_id_present", "prd_id IS NOT NULL", Action.QUARANTINE, description="prd_id missing or not an integer"
        ),
        Expectation(
            "prd_key_present", "prd_key IS NOT NULL", Action.QUARANTINE, description="product key missing or too short"
        ),
        Expectation(
            "prd_start_dt_present",
            "prd_start_dt IS NOT NULL",
            Action.QUARANTINE,
            description="start date missing or not yyyy-MM-dd",
        ),
        Expectation("prd_cost_non_negative", "prd_cost >= 0", Action.WARN),
        _valid("prd_cost", "cost (integer)", Action.WARN),
    )


def _sales(run_date: date) -> tuple[Expectation, ...]:
    return (
        _present("sls_ord_num", "order number"),
        _present("sls_prd_key", "product key"),
        Expectation(
            "sls_cust_id_present",
            "sls_cust_id IS NOT NULL",
            Action.QUARANTINE,
            description="customer id missing or not an integer",
        ),
        Expectation(
            "sls_quantity_positive",
            "sls_quantity > 0",
            Action.QUARANTINE,
            description="quantity missing, not an integer or not positive",
        ),
        Expectation(
            "sls_order_dt_present",
            "sls_order_dt IS NOT NULL",
            Action.WARN,
            description="order date 0, malformed or impossible",
        ),
        Expectation(
            "order_not_after_ship",
            "sls_order_dt IS NULL OR sls_ship_dt IS NULL OR sls_order_dt <= sls_ship_dt",
            Action.WARN,
        ),
        Expectation(
            "order_not_after_due",
            "sls_order_dt IS NULL OR sls_due_dt IS NULL OR sls_order_dt <= sls_due_dt",
            Action.WARN,
        ),
        Expectation(
            "sales_equals_quantity_times_price",
            "sls_sales > 0 AND sls_sales = sls_quantity * sls_price",
            Action.QUARANTINE,
            max_fraction=0.05,
            description="sales = quantity x price after repair (S11/S12)",
        ),
    )


def _az12(run_date: date) -> tuple[Expectation, ...]:
    return (
        _present("cid", "customer id"),
        Expectation(
            "birthdate_in_range",
            f"bdate IS NULL OR bdate BETWEEN DATE'1924-01-01' AND DATE'{run_date.isoformat()}'",
            Action.WARN,
            description="birthdate before 1924 (future ones are nulled by S14)",
        ),
    )


def _loc(run_date: date) -> tuple[Expectation, ...]:
    return (_present("cid", "customer id"), Expectation("cntry_known", "cntry <> 'n/a'", Action.WARN))


def _cat(run_date: date) -> tuple[Expectation, ...]:
    return (
        _present("id", "category id"),
        Expectation("maintenance_yes_no", "maintenance IN ('Yes', 'No')", Action.WARN),
    )


_CUST = SilverTable(
    "crm_cust_info",
    t.clean_crm_cust_info,
    keys=("cst_id",),
    recency=("coalesce({a}cst_create_date, DATE'0001-01-01')", *LATEST_DELIVERY),
    expectations=_cust,
)
_PRD = SilverTable(
    "crm_prd_info",
    t.clean_crm_prd_info,
    keys=("prd_key", "prd_start_dt"),
    recency=LATEST_DELIVERY,
    expectations=_prd,
    output_expectations=(
        Expectation("prd_end_not_before_start", "prd_end_dt IS NULL OR prd_end_dt >= prd_start_dt", Action.FAIL),
    ),
    versioned=True,
)
_SALES = SilverTable(
    "crm_sales_details",
    t.clean_crm_sales_details,
    keys=("sls_ord_num", "sls_prd_key"),
    recency=LATEST_DELIVERY,
    expectations=_sales,
)
_AZ12 = SilverTable("erp_cust_az12", t.clean_erp_cust_az12, ("cid",), LATEST_DELIVERY, _az12)
_LOC = SilverTable("erp_loc_a101", t.clean_erp_loc_a101, ("cid",), LATEST_DELIVERY, _loc)
_CAT = SilverTable("erp_px_cat_g1v2", t.clean_erp_px_cat_g1v2, ("id",), LATEST_DELIVERY, _cat)

SILVER_TABLES: dict[str, SilverTable] = {s.name: s for s in (_CUST, _PRD, _SALES, _AZ12, _LOC, _CAT)}
