from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from spark_jobs.settings import REPO_ROOT, Engine, Settings, SettingsError


def test_local_defaults_are_git_ignored_folders_in_the_repo():
    s = Settings.from_env({})
    assert s.engine is Engine.SAIL
    assert s.lakehouse_root == REPO_ROOT / ".lakehouse" / "tables"
    assert s.landing_root == str(REPO_ROOT / ".lakehouse" / "landing")
    assert ".lakehouse/" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def test_local_tables_are_delta_folders_under_the_root(tmp_path: Path):
    s = Settings.from_env({"LAKEHOUSE_ROOT": str(tmp_path), "LAKEHOUSE_LANDING_ROOT": "/data/in/"})
    ref = s.table("bronze", "crm_cust_info")
    assert ref.path == str(tmp_path / "bronze" / "crm_cust_info")
    assert ref.sql == f"delta.`{tmp_path}/bronze/crm_cust_info`"
    assert s.landing_dir(date(2024, 1, 15)) == "/data/in/2024-01-15"


def test_on_databricks_tables_are_unity_catalog_names_and_landing_is_a_volume():
    s = Settings.from_env({"DATABRICKS_RUNTIME_VERSION": "15.4", "LAKEHOUSE_ENV": "prod"})
    assert s.engine is Engine.DATABRICKS
    assert s.table("gold", "dim_customers").sql == "lakehouse_prod.gold.dim_customers"
    assert s.landing_root == "/Volumes/lakehouse_prod/landing/raw"
    assert s.lakehouse_root is None


def test_catalog_and_schemas_can_be_renamed():
    s = Settings.from_env(
        {"LAKEHOUSE_ENGINE": "databricks", "LAKEHOUSE_CATALOG": "main", "LAKEHOUSE_SCHEMA_SILVER": "crm_silver"}
    )
    assert s.table("silver", "crm_prd_info").full_name == "main.crm_silver.crm_prd_info"


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(
        SettingsError, match="LAKEHOUSE_ENGINE='duckdb' is not one of: sail, spark, connect, databricks"
    ):
        Settings.from_env({"LAKEHOUSE_ENGINE": "duckdb"})


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(SettingsError, match="unknown layer 'platinum'"):
        Settings.from_env({}).table("platinum", "x")
