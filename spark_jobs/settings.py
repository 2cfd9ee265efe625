"""One place that resolves the environment: where tables and landing files live, which engine runs.

Everything environment-specific is read here, once, from environment variables (optionally
overridden by CLI flags). Jobs and transforms never read ``os.environ`` themselves.

Locally, table ``<layer>.<name>`` is a Delta table at ``<LAKEHOUSE_ROOT>/<layer>/<name>``.
On Databricks it is the Unity Catalog table ``<catalog>.<layer schema>.<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("bronze", "silver", "gold")


class Engine(StrEnum):
    """Which Spark runs the jobs."""

    SAIL = "sail"  # embedded LakeSail Spark Connect server (local default)
    SPARK = "spark"  # classic JVM Spark, local[*]
    CONNECT = "connect"  # any Spark Connect server at SPARK_REMOTE
    DATABRICKS = "databricks"  # the active session of a Databricks cluster / serverless


class SettingsError(ValueError):
    """A setting is missing or has an invalid value."""


@dataclass(frozen=True)
class TableRef:
    """A logical table (``layer.name``) resolved to where it physically lives."""

    layer: str
    name: str
    path: str | None = None  # local Delta path
    full_name: str | None = None  # Unity Catalog three-part name

    @property
    def logical_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def sql(self) -> str:
        """How to name this table in Spark SQL (``MERGE INTO <sql>``)."""
        if self.full_name is not None:
            return self.full_name
        return f"delta.`{self.path}`"

    def __str__(self) -> str:
        return self.full_name or f"{self.logical_name} ({self.path})"


@dataclass(frozen=True)
class Settings:
    env: str
    engine: Engine
    landing_root: str
    lakehouse_root: Path | None = None  # local tables
    catalog: str | None = None  # Unity Catalog
    schemas: Mapping[str, str] = field(default_factory=lambda: {layer: layer for layer in LAYERS})
    spark_remote: str | None = None
    delta_jars_dir: Path | None = None
    dq_enforce: bool = True  # False: breached expectations are logged and recorded, but do not fail

    @property
    def uses_catalog(self) -> bool:
        return self.catalog is not None

    def table(self, layer: str, name: str) -> TableRef:
        if layer not in self.schemas:
            raise SettingsError(f"unknown layer {layer!r}; expected one of {sorted(self.schemas)}")
        if self.catalog is not None:
            return TableRef(layer, name, full_name=f"{self.catalog}.{self.schemas[layer]}.{name}")
        assert self.lakehouse_root is not None
        return TableRef(layer, name, path=str(self.lakehouse_root / layer / name))

    def landing_dir(self, batch_date: date) -> str:
        """The folder of one day's delivery: ``<landing_root>/<YYYY-MM-DD>``."""
        return f"{self.landing_root.rstrip('/')}/{batch_date.isoformat()}"

    def with_overrides(self, **overrides: object) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Resolve settings from environment variables.

        ``LAKEHOUSE_ENGINE``: sail (default locally) | spark | connect | databricks (default when
        ``DATABRICKS_RUNTIME_VERSION`` is set). ``LAKEHOUSE_ROOT`` / ``LAKEHOUSE_LANDING_ROOT``: local
        folders (default: git-ignored ``.lakehouse/tables`` and ``.lakehouse/landing`` in the repo).
        ``LAKEHOUSE_CATALOG``: Unity Catalog catalog; when set, tables are ``catalog.<layer>.<name>``
        (schemas renamed with ``LAKEHOUSE_SCHEMA_BRONZE`` etc.). ``LAKEHOUSE_DQ_MODE``: enforce
        (default: breached expectations fail the job) | report (logged and recorded only).
        """
        env = os.environ if environ is None else environ
        on_databricks = "DATABRICKS_RUNTIME_VERSION" in env
        raw_engine = env.get("LAKEHOUSE_ENGINE") or ("databricks" if on_databricks else "sail")
        try:
            engine = Engine(raw_engine.strip().lower())
        except ValueError:
            choices = ", ".join(e.value for e in Engine)
            raise SettingsError(f"LAKEHOUSE_ENGINE={raw_engine!r} is not one of: {choices}") from None
        catalog = env.get("LAKEHOUSE_CATALOG") or None
        if engine is Engine.DATABRICKS and catalog is None:
            catalog = f"lakehouse_{env.get('LAKEHOUSE_ENV', 'dev')}"
        schemas = {layer: env.get(f"LAKEHOUSE_SCHEMA_{layer.upper()}", layer) for layer in LAYERS}
        if catalog is not None:
            default_landing = f"/Volumes/{catalog}/landing/raw"
            lakehouse_root = None
        else:
            default_landing = str(REPO_ROOT / ".lakehouse" / "landing")
            lakehouse_root = Path(env.get("LAKEHOUSE_ROOT") or REPO_ROOT / ".lakehouse" / "tables").resolve()
        dq_mode = env.get("LAKEHOUSE_DQ_MODE", "enforce").strip().lower()
        if dq_mode not in ("enforce", "report"):
            raise SettingsError(f"LAKEHOUSE_DQ_MODE={dq_mode!r} is not one of: enforce, report")
        jars = env.get("LAKEHOUSE_DELTA_JARS")
        return cls(
            env=env.get("LAKEHOUSE_ENV", "local"),
            engine=engine,
            landing_root=env.get("LAKEHOUSE_LANDING_ROOT") or default_landing,
            lakehouse_root=lakehouse_root,
            catalog=catalog,
            schemas=schemas,
            spark_remote=env.get("SPARK_REMOTE") or None,
            delta_jars_dir=Path(jars) if jars else None,
            dq_enforce=dq_mode == "enforce",
        )
