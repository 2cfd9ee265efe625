"""Bronze job against real Delta tables on disk, on generated and on hand-made malformed files."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs.bronze.job import run_bronze
from spark_jobs.errors import EmptyRedeliveryError, HeaderMismatchError
from spark_jobs.settings import Settings
from spark_jobs.sources import SOURCES
from spark_jobs.tables import TableStore
from tests.conftest import SAMPLE_START

pytestmark = pytest.mark.delta
D1, D2 = date(2024, 1, 15), date(2024, 1, 16)
CUST_HEADER = ",".join(SOURCES["crm_cust_info"].columns)


def write_export(settings: Settings, batch: date, table: str, content: bytes | str, *, name: str | None = None) -> Path:
    source = SOURCES[table]
    path = Path(settings.landing_dir(batch)) / source.system / (name or source.file_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def slice_of(spark, settings: Settings, table: str, batch: date):
    return (
        TableStore(spark, settings).read(settings.table("bronze", table)).filter(F.col("_batch_date") == F.lit(batch))
    )


def data_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip(b"\r"))


def test_generated_history_batch_loads_every_line(spark, settings, sample_landing):
    settings = settings.with_overrides(landing_root=str(sample_landing))
    results = {r.table: r for r in run_bronze(spark, settings, SAMPLE_START)}
    for name, source in SOURCES.items():
        path = Path(settings.landing_dir(SAMPLE_START)) / source.system / source.file_name
        assert results[name].status == "loaded"
        assert results[name].records == data_lines(path), name
        assert results[name].quarantined == 0, name
    prd = slice_of(spark, settings, "crm_prd_info", SAMPLE_START)
    assert prd.filter(F.col("prd_nm").contains(", ")).count() > 0  # quoted names with commas kept whole
    assert prd.filter(F.col("prd_nm").startswith('"')).count() == 0


def test_rerunning_a_batch_replaces_only_that_batch(spark, settings):
    write_export(
        settings,
        D1,
        "crm_cust_info",
        f"{CUST_HEADER}\r\n1,AW1,Ann,Lee,S,F,2020-01-01\r\n2,AW2,Bo,Ng,M,M,2020-01-02\r\n",
    )
    write_export(settings, D2, "crm_cust_info", f"{CUST_HEADER}\r\n3,AW3,Cy,Po,S,F,2020-01-03")
    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    run_bronze(spark, settings, D2, tables=["crm_cust_info"])
    day2_before = slice_of(spark, settings, "crm_cust_info", D2).collect()

    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    results = run_bronze(spark, settings, D1, tables=["crm_cust_info"])

    assert results[0].records == 2
    assert slice_of(spark, settings, "crm_cust_info", D1).count() == 2
    assert slice_of(spark, settings, "crm_cust_info", D2).collect() == day2_before
    total = TableStore(spark, settings).read(settings.table("bronze", "crm_cust_info")).count()
    assert total == 3


@pytest.fixture(params=["one partition", "split for parsing"])
def parse_split(request, monkeypatch):
    """Run a test on small files as they are (parsed in one partition) and as if they were large
    (lines spread over several partitions before parsing)."""
    if request.param == "split for parsing":
        monkeypatch.setattr("spark_jobs.bronze.job.PARSE_SPLIT_BYTES", 64)


@pytest.mark.usefixtures("parse_split")
def test_malformed_lines_are_quarantined_with_line_numbers_and_nothing_is_lost(spark, settings):
    content = (
        CUST_HEADER.encode() + b"\r\n"
        b"1,AW1,Ann,Lee,S,F,2020-01-01\r\n"  # line 2 ok
        b"2,AW2,Bo,Ng,M,M\r\n"  # line 3: 6 fields
        b'3,AW3,"Cy, Jr",Po,S,F,2020-01-03\r\n'  # line 4 ok (quoted comma)
        b'4,AW4,"Di,Xu,S,F,2020-01-04\r\n'  # line 5: broken quoting
        b"5,AW5,Ed,M\xfcller,S,M,2020-01-05\r\n"  # line 6: latin-1 byte, not UTF-8
        b"\r\n"  # line 7: blank, not a record
        b"6,AW6,Fa,Li,S,F,2020-01-06,extra\r\n"  # line 8: 8 fields
        b"7,AW7,Gu,Ma,M,F,2020-01-07"  # line 9 ok, no trailing newline
    )
    path = write_export(settings, D1, "crm_cust_info", content)

    [result] = run_bronze(spark, settings, D1, tables=["crm_cust_info"])

    assert (result.records, result.quarantined) == (3, 4)
    records = slice_of(spark, settings, "crm_cust_info", D1).select("cst_id", "cst_firstname", "_line_number")
    assert sorted(records.collect()) == [("1", "Ann", 2), ("3", "Cy, Jr", 4), ("7", "Gu", 9)]
    quarantine = TableStore(spark, settings).read(settings.table("bronze", "crm_cust_info_quarantine"))
    got = {r["_line_number"]: r for r in quarantine.collect()}
    assert sorted(got) == [3, 5, 6, 8]
    assert got[3]["_reason"] == "expected 7 fields, found 6"
    assert got[3]["_raw_line"] == "2,AW2,Bo,Ng,M,M"
    assert got[5]["_reason"].startswith("unbalanced quotes")
    assert got[6]["_reason"] == "invalid UTF-8 byte sequence"
    assert got[6]["_raw_line"] == "5,AW5,Ed,M\ufffdller,S,M,2020-01-05"
    assert got[8]["_reason"] == "expected 7 fields, found 8"
    assert {r["_source_file"] for r in got.values()} == {str(path)}


@pytest.mark.usefixtures("parse_split")
def test_line_numbers_follow_the_file_in_a_large_file(spark, settings):
    n = 120_000
    body = "".join(f"{i},AW{i},N,L,S,F,2020-01-01\r\n" for i in range(2, n + 2))
    write_export(settings, D1, "crm_cust_info", f"{CUST_HEADER}\r\n{body}")
    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    df = slice_of(spark, settings, "crm_cust_info", D1)
    assert df.count() == n
    assert df.filter(F.col("cst_id").cast("long") != F.col("_line_number")).count() == 0


@pytest.mark.parametrize("content", ["", CUST_HEADER, CUST_HEADER + "\r\n", CUST_HEADER + "\r\n\r\n"])
def test_empty_or_header_only_redelivery_of_a_batch_with_data_is_refused_unless_forced(spark, settings, content):
    write_export(settings, D1, "crm_cust_info", f"{CUST_HEADER}\r\n1,AW1,Ann,Lee,S,F,2020-01-01\r\n")
    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    write_export(settings, D1, "crm_cust_info", content)  # re-delivery of the batch, now empty

    with pytest.raises(
        EmptyRedeliveryError, match=r"bronze crm_cust_info: .*cust_info.csv has no data lines, but batch 2024-01-15"
    ):
        run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    assert slice_of(spark, settings, "crm_cust_info", D1).count() == 1  # kept

    [result] = run_bronze(spark, settings, D1, tables=["crm_cust_info"], allow_empty_redelivery=True)

    assert (result.records, result.quarantined) == (0, 0)
    assert slice_of(spark, settings, "crm_cust_info", D1).count() == 0


def test_empty_redelivery_of_a_batch_of_only_rejects_is_refused_too(spark, settings):
    write_export(settings, D1, "crm_cust_info", f"{CUST_HEADER}\r\n1,AW1\r\n")
    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    write_export(settings, D1, "crm_cust_info", CUST_HEADER)
    with pytest.raises(EmptyRedeliveryError):
        run_bronze(spark, settings, D1, tables=["crm_cust_info"])


@pytest.mark.parametrize("content", ["", CUST_HEADER + "\r\n"])
def test_empty_file_for_a_batch_without_data_is_an_empty_batch(spark, settings, content):
    write_export(settings, D1, "crm_cust_info", f"{CUST_HEADER}\r\n1,AW1,Ann,Lee,S,F,2020-01-01\r\n")
    run_bronze(spark, settings, D1, tables=["crm_cust_info"])
    write_export(settings, D2, "crm_cust_info", content)
    [result] = run_bronze(spark, settings, D2, tables=["crm_cust_info"])
    assert (result.status, result.records) == ("empty" if not content else "loaded", 0)


def test_empty_file_on_first_load_creates_the_table(spark, settings):
    write_export(settings, D1, "erp_loc_a101", "")
    [result] = run_bronze(spark, settings, D1, tables=["erp_loc_a101"])
    assert result.status == "empty"
    table = TableStore(spark, settings).read(settings.table("bronze", "erp_loc_a101"))
    assert table.columns[:2] == ["cid", "cntry"] and table.count() == 0


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("CID", "missing columns ['cntry']"),
        ("CID,CNTRY,REGION", "unexpected columns ['region']"),
        ("CID,COUNTRY", "missing columns ['cntry']; unexpected columns ['country']"),
    ],
)
def test_header_mismatch_fails_naming_file_and_columns(spark, settings, header, message):
    path = write_export(settings, D1, "erp_loc_a101", f"{header}\r\nAW-1,DE\r\n")
    with pytest.raises(HeaderMismatchError) as excinfo:
        run_bronze(spark, settings, D1, tables=["erp_loc_a101"])
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)
    assert not TableStore(spark, settings).exists(settings.table("bronze", "erp_loc_a101"))


def test_columns_in_another_order_and_case_are_matched_by_name(spark, settings):
    write_export(settings, D1, "erp_loc_a101", "cntry,cid\r\nDE,AW-00011000\r\n", name="loc_a101.CSV")
    run_bronze(spark, settings, D1, tables=["erp_loc_a101"])
    got = slice_of(spark, settings, "erp_loc_a101", D1).select("cid", "cntry")
    assert_df_equality(
        got, spark.createDataFrame([("AW-00011000", "DE")], "cid string, cntry string"), ignore_nullable=True
    )


def test_missing_file_means_no_new_data_and_keeps_the_batch(spark, settings):
    path = write_export(settings, D1, "erp_loc_a101", "CID,CNTRY\r\nAW-1,DE\r\n")
    run_bronze(spark, settings, D1, tables=["erp_loc_a101"])
    path.unlink()

    results = run_bronze(spark, settings, D1)

    assert {r.status for r in results} == {"missing"}
    assert slice_of(spark, settings, "erp_loc_a101", D1).count() == 1


def test_no_batch_folder_at_all_is_not_a_crash(spark, settings):
    assert {r.status for r in run_bronze(spark, settings, D2)} == {"missing"}


def test_daily_increments_load_into_their_own_batches(spark, settings, sample_landing, tmp_path):
    landing = tmp_path / "copy"
    shutil.copytree(sample_landing, landing)
    settings = settings.with_overrides(landing_root=str(landing))
    batches = sorted(date.fromisoformat(p.name) for p in landing.iterdir())
    for batch in batches:
        run_bronze(spark, settings, batch, tables=["crm_sales_details"])
    table = TableStore(spark, settings).read(settings.table("bronze", "crm_sales_details"))
    per_batch = {r["_batch_date"]: r["count"] for r in table.groupBy("_batch_date").count().collect()}
    expected = {b: data_lines(landing / b.isoformat() / "source_crm" / "sales_details.csv") for b in batches}
    assert per_batch == expected


@pytest.mark.usefixtures("parse_split")
def test_control_characters_are_quarantined_and_never_reach_gold(spark, settings):
    from spark_jobs.pipeline import run_layers

    content = (
        CUST_HEADER.encode() + b"\r\n"
        b"1,AW1,Ann,Lee,S,F,2020-01-01\r\n"  # line 2 ok
        b"2,AW2,B\x00o,Ng,M,M,2020-01-02\r\n"  # line 3: NUL in the first name
        b"3,AW3,Cy,Po\x1b,S,F,2020-01-03\r\n"  # line 4: ESC
        b"4,AW4,Di\tXu,Ma,S,F,2020-01-04\r\n"  # line 5 ok: a tab is text
        b"5,AW5,Ed,Li,S,M,2020-01-05\x7f\r\n"  # line 6: DEL
    )
    path = write_export(settings, D1, "crm_cust_info", content)

    [result] = run_layers(spark, settings, D1)["bronze"][:1]

    assert (result.records, result.quarantined) == (2, 3)
    assert result.records + result.quarantined == data_lines(path)  # the bronze count law
    store = TableStore(spark, settings)
    quarantine = store.read(settings.table("bronze", "crm_cust_info_quarantine"))
    assert {r["_line_number"]: r["_reason"] for r in quarantine.collect()} == {
        3: "control character U+0000 in field 3 (cst_firstname)",
        4: "control character U+001B in field 4 (cst_lastname)",
        6: "control character U+007F in field 7 (cst_create_date)",
    }
    customers = store.read(settings.table("gold", "dim_customers"))
    assert sorted(r["first_name"] for r in customers.collect()) == ["Ann", "Di\tXu"]


def test_cli_refuses_an_empty_redelivery_and_forces_it_with_the_flag(spark, settings, capsys):
    from spark_jobs.cli import console, main

    write_export(settings, D1, "erp_loc_a101", "CID,CNTRY\r\nAW-1,DE\r\n")
    roots = ["--landing-root", settings.landing_root, "--lakehouse-root", str(settings.lakehouse_root)]
    assert console(["bronze", "--run-date", D1.isoformat(), *roots]) == 0
    write_export(settings, D1, "erp_loc_a101", "CID,CNTRY\r\n")
    with pytest.raises(EmptyRedeliveryError):  # the Databricks entry point fails the task
        main(["bronze", "--run-date", D1.isoformat(), *roots])
    assert console(["bronze", "--run-date", D1.isoformat(), *roots]) == 1  # a shell gets exit code 1
    assert slice_of(spark, settings, "erp_loc_a101", D1).count() == 1
    assert console(["bronze", "--run-date", D1.isoformat(), *roots, "--allow-empty-redelivery"]) == 0
    assert slice_of(spark, settings, "erp_loc_a101", D1).count() == 0
