"""A table whose stored schema no longer matches what the job writes (a column added or dropped by
hand, or by another version of the code) fails the layer with a named error before anything of the
layer is written: the write schemas are fetched with the layer's checks, not asked per write."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from spark_jobs.errors import SchemaMismatchError
from spark_jobs.pipeline import run_layers
from spark_jobs.settings import Settings
from tests.conftest import SAMPLE_START

pytestmark = pytest.mark.delta

SILVER = ("crm_cust_info", "crm_prd_info", "crm_sales_details", "erp_cust_az12", "erp_loc_a101", "erp_px_cat_g1v2")
GOLD = ("dim_customers", "dim_products", "fact_sales")


def _settings(landing, tmp_path) -> Settings:
    return Settings.from_env({"LAKEHOUSE_LANDING_ROOT": str(landing), "LAKEHOUSE_ROOT": str(tmp_path / "tables")})


def _add_column(path: str) -> None:
    """Rewrite the Delta table at ``path`` with one more column, ``added_by_hand``."""
    table = DeltaTable(path).to_pyarrow_table()
    table = table.append_column("added_by_hand", pa.array([None] * table.num_rows, pa.string()))
    write_deltalake(path, table, mode="overwrite", schema_mode="overwrite")


def _versions(settings: Settings, layer: str, names: tuple[str, ...]) -> dict[str, int]:
    return {n: DeltaTable(str(settings.table(layer, n).path)).version() for n in names}


@pytest.mark.parametrize(
    ("layer", "names", "drifted"), [("silver", SILVER, "crm_cust_info"), ("gold", GOLD, "dim_customers")]
)
def test_a_drifted_table_fails_its_layer_before_any_write(spark, sample_landing, tmp_path, layer, names, drifted):
    settings = _settings(sample_landing, tmp_path)
    run_layers(spark, settings, SAMPLE_START)
    next_day = SAMPLE_START + timedelta(days=1)
    run_layers(spark, settings, next_day, ["bronze"] if layer == "silver" else ["bronze", "silver"])
    _add_column(str(settings.table(layer, drifted).path))
    before = _versions(settings, layer, names)

    with pytest.raises(SchemaMismatchError, match=rf"{layer}\.{drifted}.*missing columns \['added_by_hand'\]"):
        run_layers(spark, settings, next_day, [layer])

    assert _versions(settings, layer, names) == before  # no table of the layer was written
