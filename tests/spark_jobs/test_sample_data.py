from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

from spark_jobs.sample_data import generate
from spark_jobs.sources import SOURCES


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.csv"))}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_same_bytes_and_history_independent_of_increments(tmp_path):
    generate(tmp_path / "a", scale=0.02, start_date=date(2014, 1, 29), days=2, seed=1)
    generate(tmp_path / "b", scale=0.02, start_date=date(2014, 1, 29), days=2, seed=1)
    generate(tmp_path / "c", scale=0.02, start_date=date(2014, 1, 29), days=0, seed=1)
    a, c = _digest(tmp_path / "a"), _digest(tmp_path / "c")
    assert a == _digest(tmp_path / "b")
    assert {k: v for k, v in a.items() if k.startswith("2014-01-29")} == c


def test_layout_headers_and_crlf(sample_landing):
    history = sample_landing / "2014-01-29"
    for source in SOURCES.values():
        raw = (history / source.system / source.file_name).read_bytes()
        assert raw.startswith(",".join(source.columns).encode() + b"\r\n")
        assert b"\n" not in raw.replace(b"\r\n", b"")
    assert sorted(p.name for p in sample_landing.iterdir()) == ["2014-01-29", "2014-01-30", "2014-01-31", "2014-02-01"]


def test_history_has_the_quirks_of_real_exports(tmp_path):
    generate(tmp_path, scale=0.5, start_date=date(2014, 1, 29), seed=3)
    batch = tmp_path / "2014-01-29"
    cust = _rows(batch / "source_crm" / "cust_info.csv")
    ids = [r["cst_id"] for r in cust]
    assert "" in ids and len(set(ids)) < len(ids)  # null and duplicate ids
    assert any(r["cst_firstname"] != r["cst_firstname"].strip() for r in cust)
    prd = _rows(batch / "source_crm" / "prd_info.csv")
    assert any(r["prd_end_dt"] and r["prd_end_dt"] < r["prd_start_dt"] for r in prd)
    assert any(r["prd_cost"] == "" for r in prd) and any("," in r["prd_nm"] for r in prd)
    sales = _rows(batch / "source_crm" / "sales_details.csv")
    assert any(r["sls_order_dt"] == "0" or len(r["sls_order_dt"]) != 8 for r in sales)
    assert any(r["sls_sales"] == "" or int(r["sls_sales"]) <= 0 for r in sales)
    assert any(r["sls_price"] == "" or int(r["sls_price"]) <= 0 for r in sales)
    az = _rows(batch / "source_erp" / "CUST_AZ12.csv")
    assert any(r["CID"].startswith("NAS") for r in az) and any(r["BDATE"] > "2014-01-29" for r in az)
    assert {"F", "M", "Female", "Male", ""} <= {r["GEN"] for r in az}
    loc = _rows(batch / "source_erp" / "LOC_A101.csv")
    assert {"DE", "US", "USA", ""} <= {r["CNTRY"] for r in loc} and all("-" in r["CID"] for r in loc)
    px_ids = {r["ID"] for r in _rows(batch / "source_erp" / "PX_CAT_G1V2.csv")}
    assert any(r["prd_key"][:5].replace("-", "_") not in px_ids for r in prd)
    assert 25_000 < len(sales) < 35_000 and 8_000 < len(cust) < 10_000


def test_increments_carry_new_days_and_redeliveries(tmp_path):
    generate(tmp_path, scale=0.05, start_date=date(2014, 1, 29), days=12, seed=5)
    days = sorted(p for p in tmp_path.iterdir() if p.name != "2014-01-29")
    assert len(days) == 12
    keys_seen: set[tuple[str, str]] = set()
    repeated = 0
    for day in days:
        sales = _rows(day / "source_crm" / "sales_details.csv")
        keys = {(r["sls_ord_num"], r["sls_prd_key"]) for r in sales}
        repeated += len(keys & keys_seen)
        keys_seen |= keys
    assert repeated > 0  # re-delivered files / late duplicates
    assert any((d / "source_crm" / "prd_info.csv").exists() for d in days)
    assert any(not (d / "source_erp" / "PX_CAT_G1V2.csv").exists() for d in days)
