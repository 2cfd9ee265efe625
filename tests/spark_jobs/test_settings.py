from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from spark_jobs.errors import SettingsError
from spark_jobs.settings import REPO_ROOT, Engine, Overrides, Settings


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
    assert s.landing_root == "/Volumes/lakehouse_prod/raw/landing"
    assert s.lakehouse_root is None


def test_command_line_target_wins_and_the_defaults_follow_it():
    """Overrides first, defaults after them: a --catalog moves the landing root with the tables
    (it used to stay in the catalog of the environment variables)."""
    environ = {"DATABRICKS_RUNTIME_VERSION": "16.4", "LAKEHOUSE_ENV": "dev"}
    s = Settings.from_env(environ, overrides=Overrides(catalog="main", schemas={"gold": "bi"}))
    assert (s.env, s.catalog) == ("dev", "main")
    assert s.table("gold", "fact_sales").full_name == "main.bi.fact_sales"
    assert s.table("bronze", "crm_cust_info").full_name == "main.bronze.crm_cust_info"
    assert s.landing_root == "/Volumes/main/raw/landing"
    s = Settings.from_env(environ, overrides=Overrides(env="prod"))
    assert (s.env, s.catalog, s.landing_root) == ("prod", "lakehouse_prod", "/Volumes/lakehouse_prod/raw/landing")
    given = Overrides(env="prod", landing_root="/Volumes/shared/raw/exports")
    assert Settings.from_env(environ, overrides=given).landing_root == "/Volumes/shared/raw/exports"


def test_one_env_default_local_and_a_workspace_target_without_catalog_gets_its_own():
    assert Settings.from_env({}).env == "local"
    assert Settings.from_env({}).catalog is None
    assert Settings.from_env({"LAKEHOUSE_ENV": "prod", "LAKEHOUSE_ENGINE": "connect"}).catalog == "lakehouse_prod"


def test_databricks_without_a_target_is_a_clear_error():
    with pytest.raises(SettingsError, match="on Databricks the tables live in Unity Catalog: name the target"):
        Settings.from_env({"DATABRICKS_RUNTIME_VERSION": "16.4"})


def test_the_target_cannot_be_replaced_behind_the_resolution():
    with pytest.raises(TypeError, match=r"catalog must be resolved with Settings\.from_env"):
        Settings.from_env({}).with_overrides(catalog="main")


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
