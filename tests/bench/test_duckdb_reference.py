"""The DuckDB reference of the benchmark is the same computation as the pipeline.

Both run the first load of one batch (the generated history at scale 0.01, plus hand-made dirty
lines that exercise the bronze quarantine reasons, the cleaning rules, the quarantine expectations,
de-duplication, SCD2 versions and the fact fallback) and every silver and gold table is compared.

Inherent difference: surrogate keys are ``xxhash64`` on Spark and DuckDB's ``hash`` in the
reference, so gold tables are compared without them and each fact's product and customer links are
compared by the natural key they point to (product number + valid_from, customer id).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.settings import Settings

pytest.importorskip("duckdb")
from bench.duckdb_reference import run_reference

pytestmark = pytest.mark.delta

SILVER = ("crm_cust_info", "crm_prd_info", "crm_sales_details", "erp_cust_az12", "erp_loc_a101", "erp_px_cat_g1v2")
DIRTY = {
    "source_crm/cust_info.csv": [
        "  99001 , AW99001 ,  Ann ,Lee , s , f ,2012-02-29",  # trims, codes, a leap day
        "99002,AW99002,Bob,Ray,X,,2013-02-29",  # unknown codes, impossible date (WARN only)
        "99002,AW99002,Bob,Ray,M,M,2013-03-01",  # same key, newer create date: this one wins
        "1.5,AW99003,Cy,Doe,M,M,2013-01-01",  # id not an integer: quarantined
        '99004,AW99004,"Smith, ""Jr""",Dee,M,M,2013-01-01',  # quoted comma and escaped quotes
        '99005,AW99005,"Broken,Dee,M,M,2013-01-01',  # unbalanced quotes: bronze quarantine
        '99006,AW99006,"Al"x,Dee,M,M,2013-01-01',  # text after a closing quote: bronze quarantine
        "99007,AW99007,too,few",  # wrong number of fields: bronze quarantine
        "",  # blank line: dropped
    ],
    "source_crm/prd_info.csv": [
        "901,CO-RF-FR-R92B-58,New Frame,,R,2010-01-01,",  # null cost -> 0
        "902,CO-RF-FR-R92B-58,New Frame,1200,R,2012-06-01,2011-01-01",  # second version; end recomputed
        "903,CO-RF-FR-R92B-58,New Frame,1300,r,2012-06-01,",  # same key again: the later line wins
        "904,XX-Y,Short key,5,M,2012-01-01,",  # key too short: quarantined
        "905,XX-YY-ZZ1,No start,5,M,,",  # no start date: quarantined
    ],
    "source_crm/sales_details.csv": [
        "SO99001,FR-R92B-58,11000,20091231,20100105,20100110,100,2,60",  # before first version: fallback
        "SO99002,FR-R92B-58,11000,20120701,20120705,20120710,,2,1250",  # sales repaired from price
        "SO99003,FR-R92B-58,99001,0,20120705,20120710,2600,2,-5",  # no order date, price derived
        "SO99004,FR-R92B-58,99002,20190229,20120705,20120710,-10,3,",  # impossible date, no price
        "SO99005,FR-R92B-58,11001,20110601,20110605,20110610,500,0,",  # zero quantity: quarantined
        "SO99006,ZZ-UNKNOWN,424242,20110601,20110605,20110610,10,1,10",  # unknown product and customer
        "SO99006,ZZ-UNKNOWN,424242,20110601,20110605,20110610,20,2,10",  # same key: later line wins
    ],
    "source_erp/CUST_AZ12.csv": ["NASAW99001,2099-01-01,female", "AW99002,1900-05-05, MALE ", ",1990-01-01,F"],
    "source_erp/LOC_A101.csv": ["AW-99001,DE", "AW-99002,USA", "AW-99004, ", "AW-99009,Atlantis"],
    "source_erp/PX_CAT_G1V2.csv": [" CO_RF , Components , Road Frames ,Maybe"],
}


@pytest.fixture(scope="module")
def landing(sample_landing: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.conftest import SAMPLE_START

    root = tmp_path_factory.mktemp("duckdb_landing")
    day = SAMPLE_START.isoformat()
    shutil.copytree(sample_landing / day, root / day)
    for name, lines in DIRTY.items():
        path = root / day / name
        path.write_bytes(path.read_bytes().rstrip(b"\r\n") + b"\r\n" + "\r\n".join(lines).encode() + b"\r\n")
    return root, SAMPLE_START


def _rows(path: Path) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    return list(DeltaTable(str(path)).to_pyarrow_table().to_pylist())


@pytest.fixture(scope="module")
def both(spark: Any, landing: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from spark_jobs.pipeline import run_layers

    root, day = landing
    ours = tmp_path_factory.mktemp("pipeline")
    settings = Settings.from_env(
        {"LAKEHOUSE_LANDING_ROOT": str(root), "LAKEHOUSE_ROOT": str(ours), "LAKEHOUSE_DQ_MODE": "report"}
    )
    run_layers(spark, settings, day)
    reference = tmp_path_factory.mktemp("duckdb")
    run_reference(root, day, reference)
    return {"pipeline": ours, "duckdb": reference}


def _multiset(rows: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(sorted((k, v) for k, v in r.items() if k not in drop)) for r in rows)


def _drop_ingestion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("_ingested_at", "_source_file")} for r in rows]


@pytest.mark.parametrize("table", [*SILVER, *(f"{t}_quarantine" for t in SILVER)])
def test_bronze_tables_match(both: dict[str, Path], table: str) -> None:
    ours, ref = (_drop_ingestion(_rows(both[k] / "bronze" / table)) for k in ("pipeline", "duckdb"))
    assert len(ours) == len(ref)
    assert _multiset(ours) == _multiset(ref)


@pytest.mark.parametrize("table", [*SILVER, *(f"{t}_quarantine" for t in SILVER)])
def test_silver_tables_match(both: dict[str, Path], table: str) -> None:
    """Row counts, and every row (natural keys, cleaned values, lineage, quarantine reasons)."""
    ours, ref = (_rows(both[k] / "silver" / table) for k in ("pipeline", "duckdb"))
    assert len(ours) == len(ref)
    assert _multiset(ours) == _multiset(ref)


def test_dirty_lines_took_every_path(both: dict[str, Path]) -> None:
    """The hand-made lines do reach the rules they are there for (on the reference's output)."""
    ref = both["duckdb"]
    reasons = {r["_reason"].split(",")[0] for r in _rows(ref / "bronze" / "crm_cust_info_quarantine")}
    assert {"unbalanced quotes (broken quoting or a record spanning lines)", "expected 7 fields"} <= reasons
    assert any("malformed" in r for r in reasons)
    facts = _rows(ref / "gold" / "fact_sales")
    assert sum(f["product_version_fallback"] for f in facts) >= 2
    assert any(f["customer_key"] is None for f in facts) and any(f["product_key"] is None for f in facts)
    versions = [p for p in _rows(ref / "gold" / "dim_products") if p["product_number"] == "FR-R92B-58"]
    assert len(versions) >= 2 and sum(p["is_current"] for p in versions) == 1


def _gold(root: Path) -> dict[str, list[dict[str, Any]]]:
    tables = (
        "dim_customers",
        "dim_products",
        "fact_sales",
        "sales_monthly_by_category_country",
        "product_cost_history",
    )
    return {t: _rows(root / "gold" / t) for t in tables}


def test_gold_tables_match_on_natural_keys(both: dict[str, Path]) -> None:
    ours, ref = _gold(both["pipeline"]), _gold(both["duckdb"])
    for table in ours:
        assert len(ours[table]) == len(ref[table]), table
    assert _multiset(ours["dim_customers"], ("customer_key",)) == _multiset(ref["dim_customers"], ("customer_key",))
    assert _multiset(ours["dim_products"], ("product_key",)) == _multiset(ref["dim_products"], ("product_key",))
    for view in ("sales_monthly_by_category_country", "product_cost_history"):
        assert _multiset(ours[view]) == _multiset(ref[view]), view

    def facts(gold: dict[str, list[dict[str, Any]]]) -> Counter[tuple[Any, ...]]:
        """Each fact with its links replaced by the natural keys they point to."""
        version = {p["product_key"]: (p["product_number"], p["valid_from"]) for p in gold["dim_products"]}
        customer = {c["customer_key"]: c["customer_id"] for c in gold["dim_customers"]}
        rows = [
            {
                **f,
                "product_key": version.get(f["product_key"]) if f["product_key"] is not None else None,
                "customer_key": customer.get(f["customer_key"]) if f["customer_key"] is not None else None,
            }
            for f in gold["fact_sales"]
        ]
        return _multiset(rows)

    assert facts(ours) == facts(ref)
    for gold in (ours, ref):  # the keys are keys on both sides
        assert len({p["product_key"] for p in gold["dim_products"]}) == len(gold["dim_products"])
        assert len({c["customer_key"] for c in gold["dim_customers"]}) == len(gold["dim_customers"])


def test_gold_sums_match(both: dict[str, Path]) -> None:
    def sums(root: Path) -> dict[str, int]:
        facts = _rows(root / "gold" / "fact_sales")
        return {
            "sales_amount": sum(f["sales_amount"] or 0 for f in facts),
            "quantity": sum(f["quantity"] or 0 for f in facts),
            "fallback": sum(bool(f["product_version_fallback"]) for f in facts),
            "unlinked_customer": sum(f["customer_key"] is None for f in facts),
            "unlinked_product": sum(f["product_key"] is None for f in facts),
            "orders": len({f["order_number"] for f in facts}),
        }

    assert sums(both["pipeline"]) == sums(both["duckdb"])
