"""A re-delivered day is the new truth for its day.

Re-running day D with a changed file (lines removed, changed, or moved to other lines) must leave
silver and gold exactly as if only the new delivery had ever arrived: a key the new file no longer
has falls back to its version from another day's delivery, or leaves silver and gold if no other
day has it; a removed product version re-opens the version before it.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_jobs.errors import ConservationError
from spark_jobs.pipeline import run_layers
from spark_jobs.settings import Settings
from spark_jobs.tables import TableStore
from tests.spark_jobs.test_pipeline import snapshot

pytestmark = pytest.mark.delta

START = date(2014, 1, 29)
DAYS = [START + timedelta(days=i) for i in range(4)]
D = DAYS[2]  # the day that is re-delivered
FILES = {
    "crm_cust_info": "source_crm/cust_info.csv",
    "crm_prd_info": "source_crm/prd_info.csv",
    "crm_sales_details": "source_crm/sales_details.csv",
    "erp_cust_az12": "source_erp/CUST_AZ12.csv",
    "erp_loc_a101": "source_erp/LOC_A101.csv",
    "erp_px_cat_g1v2": "source_erp/PX_CAT_G1V2.csv",
}


def _lines(path: Path) -> tuple[bytes, list[bytes]]:
    header, *rows = path.read_bytes().rstrip(b"\r\n").split(b"\r\n")
    return header, rows


def _write(path: Path, header: bytes, rows: list[bytes]) -> None:
    path.write_bytes(b"\r\n".join([header, *rows]) + b"\r\n")


@pytest.fixture(scope="module")
def first_delivery(tmp_path_factory) -> Path:
    """Four days; day D's files also carry the lines of the day before and 20 lines of the history
    (late re-sends, three of the products as a new version starting on D), so that those keys'
    winning version is D's, with an earlier version to fall back to."""
    from spark_jobs.sample_data import generate

    root = tmp_path_factory.mktemp("landing_first")
    generate(root, scale=0.01, start_date=START, days=len(DAYS) - 1, seed=5)
    for name, rel in FILES.items():
        header, resent = _lines(root / START.isoformat() / rel)
        resent = resent[:20]
        if name == "crm_prd_info":  # prd_start_dt is the 6th field: new versions from D
            resent = [_with_field(r, 5, D.isoformat().encode()) if i < 3 else r for i, r in enumerate(resent)]
        day_before = root / (D - timedelta(days=1)).isoformat() / rel
        current = root / D.isoformat() / rel
        rows = _lines(current)[1] if current.exists() else []
        before = _lines(day_before)[1] if day_before.exists() else []
        current.parent.mkdir(parents=True, exist_ok=True)
        _write(current, header, [*rows, *before, *resent])
    return root


def _with_field(line: bytes, index: int, value: bytes) -> bytes:
    """``line`` with its ``index``-th comma-separated field replaced (fields before it hold no comma)."""
    fields = line.split(b",")
    fields[index] = value
    return b",".join(fields)


def _corrected(first: Path, target: Path) -> Path:
    """The same landing, with day D re-delivered: a third of its lines and most of the late re-sends
    removed, the first name of a customer changed, and the remaining lines in reverse order."""
    shutil.copytree(first, target)
    for name, rel in FILES.items():
        header, rows = _lines(first / D.isoformat() / rel)
        kept = [r for i, r in enumerate(rows) if i % 3 != 1][:-6]
        if name == "crm_cust_info":
            kept[0] = _with_field(kept[0], 2, b"Corrected")
        _write(target / D.isoformat() / rel, header, list(reversed(kept)))
    return target


def _settings(landing: Path, tables: Path) -> Settings:
    return Settings.from_env({"LAKEHOUSE_LANDING_ROOT": str(landing), "LAKEHOUSE_ROOT": str(tables)})


@pytest.fixture(scope="module")
def history(spark, first_delivery, tmp_path_factory) -> Path:
    """The tables after every day of the first delivery, in order (built once; tests copy them)."""
    tables = tmp_path_factory.mktemp("history") / "tables"
    settings = _settings(first_delivery, tables)
    for day in DAYS:
        run_layers(spark, settings, day)
    return tables


def _history_copy(history: Path, landing: Path, target: Path) -> Settings:
    """Settings over a copy of ``history``'s tables at ``target``, reading ``landing``."""
    shutil.copytree(history, target)
    return _settings(landing, target)


def _assert_as_in_a_run_of_every_day(spark, settings: Settings, landing: Path, reference: Path) -> None:
    """Every silver and gold table of ``settings`` holds the rows of a run of every day, in order,
    on ``landing`` into new tables at ``reference``."""
    fresh = _settings(landing, reference)
    for day in DAYS:
        run_layers(spark, fresh, day)
    got, want = snapshot(spark, settings), snapshot(spark, fresh)
    for table in want:
        assert got[table] == want[table], table


def test_a_redelivered_day_leaves_silver_and_gold_as_if_only_the_new_delivery_had_arrived(
    spark, first_delivery, history, tmp_path
):
    corrected = _corrected(first_delivery, tmp_path / "landing_corrected")
    # History with the first delivery, then day D re-delivered and re-run.
    settings = _history_copy(history, first_delivery, tmp_path / "tables")
    store = TableStore(spark, settings)
    before = store.read(settings.table("silver", "crm_cust_info")).filter(F.col("_batch_date") == F.lit(D)).count()
    settings = _settings(corrected, tmp_path / "tables")
    run_layers(spark, settings, D)
    # The reference: the same history, where only the new delivery ever arrived.
    _assert_as_in_a_run_of_every_day(spark, settings, corrected, tmp_path / "reference")
    after = store.read(settings.table("silver", "crm_cust_info"))
    assert after.filter(F.col("_batch_date") == F.lit(D)).count() < before  # the change was real
    fell_back = after.filter(F.col("_batch_date") == F.lit(D - timedelta(days=1))).count()
    assert fell_back > 0


def test_an_empty_redelivery_of_a_day_takes_its_rows_out_as_if_it_had_always_been_empty(
    spark, first_delivery, history, tmp_path
):
    """Day D re-delivered with header-only files (forced: ``allow_empty_redelivery``): silver's slice
    of D is not empty, so its keys fall back to other days' rows or go, in silver and gold, exactly
    as if D's files had always been empty (product versions included)."""
    emptied = tmp_path / "landing_emptied"
    shutil.copytree(first_delivery, emptied)
    for name in ("crm_cust_info", "crm_prd_info"):
        header, _ = _lines(first_delivery / D.isoformat() / FILES[name])
        _write(emptied / D.isoformat() / FILES[name], header, [])
    settings = _history_copy(history, first_delivery, tmp_path / "tables")
    store = TableStore(spark, settings)
    batch = F.col("_batch_date") == F.lit(D)
    assert store.read(settings.table("silver", "crm_cust_info")).filter(batch).count() > 0
    settings = _settings(emptied, tmp_path / "tables")
    run_layers(spark, settings, D, allow_empty_redelivery=True)
    _assert_as_in_a_run_of_every_day(spark, settings, emptied, tmp_path / "reference")
    for name in ("crm_cust_info", "crm_prd_info"):
        assert store.read(settings.table("silver", name)).filter(batch).count() == 0


def test_rerunning_a_redelivered_day_changes_nothing(spark, first_delivery, history, tmp_path):
    corrected = _corrected(first_delivery, tmp_path / "landing_corrected")
    _history_copy(history, first_delivery, tmp_path / "tables")  # (a day after D was run too)
    settings = _settings(corrected, tmp_path / "tables")
    run_layers(spark, settings, D)
    once = snapshot(spark, settings)
    run_layers(spark, settings, D)
    assert snapshot(spark, settings) == once


def test_the_conservation_check_fails_before_anything_of_the_layer_is_written(
    spark, first_delivery, tmp_path, monkeypatch
):
    """A violation of the law (simulated: the planned state of the third table loses rows) fails
    the job before any silver table commits, so the layer is never left half-written."""
    from spark_jobs.silver import job as silver_job

    settings = _settings(first_delivery, tmp_path / "tables")
    run_layers(spark, settings, DAYS[0], ["bronze", "silver"])
    run_layers(spark, settings, DAYS[1], ["bronze"])
    store = TableStore(spark, settings)
    names = ("crm_cust_info", "crm_cust_info_quarantine", "crm_sales_details")
    tables = [settings.table("silver", n) for n in names]
    versions = [len(list((Path(t.path) / "_delta_log").glob("*.json"))) for t in tables]
    real_plan = silver_job.plan_merge

    def losing_plan(spec, *args, **kwargs):
        plan = real_plan(spec, *args, **kwargs)
        if spec.name != "crm_sales_details":
            return plan
        return silver_job.MergePlan(plan.upserts.limit(0), plan.deletes, plan.fallback)

    monkeypatch.setattr(silver_job, "plan_merge", losing_plan)
    with pytest.raises(ConservationError, match=r"silver crm_sales_details batch 2014-01-30: \d+ bronze rows but 0"):
        run_layers(spark, settings, DAYS[1], ["silver"])
    assert [len(list((Path(t.path) / "_delta_log").glob("*.json"))) for t in tables] == versions
    assert store.read(tables[0]).filter(F.col("_batch_date") == F.lit(DAYS[1])).count() == 0
