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

from spark_jobs.errors import SettingsError
from spark_jobs.target import LAYERS, LOCAL_ENV, default_catalog, default_landing_root

REPO_ROOT = Path(__file__).resolve().parent.parent


class Engine(StrEnum):
    """Which Spark runs the jobs."""

    SAIL = "sail"  # embedded LakeSail Spark Connect server (local default)
    SPARK = "spark"  # classic JVM Spark, local[*]
    CONNECT = "connect"  # any Spark Connect server at SPARK_REMOTE
    DATABRICKS = "databricks"  # the active session of a Databricks cluster / serverless


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
        """Replace fields that nothing else derives from (engine, local folders, DQ mode).

        The target (env, catalog, schemas) is resolved only by :meth:`from_env`, where the landing
        root and the catalog follow it; replacing it here would leave them behind."""
        derived = sorted(set(overrides) & {"env", "catalog", "schemas"})
        if derived:
            raise TypeError(f"{', '.join(derived)} must be resolved with Settings.from_env(overrides=...)")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, overrides: Overrides | None = None) -> Settings:
        """Resolve settings: command-line overrides first, then environment variables, then the
        defaults, which are derived from what was resolved before them.

        ``LAKEHOUSE_ENGINE``: sail (default locally) | spark | connect | databricks (default when
        ``DATABRICKS_RUNTIME_VERSION`` is set). ``LAKEHOUSE_ENV``: the target, ``local`` (default)
        or a workspace target (``dev``, ``prod``). ``LAKEHOUSE_CATALOG``: Unity Catalog catalog,
        default ``lakehouse_<env>`` for a workspace target and none for ``local``; with a catalog,
        tables are ``catalog.<schema>.<name>`` (schemas renamed with ``LAKEHOUSE_SCHEMA_BRONZE``
        etc.) and the landing root defaults to the catalog's landing volume. Without one,
        ``LAKEHOUSE_ROOT`` / ``LAKEHOUSE_LANDING_ROOT`` are local folders (default: git-ignored
        ``.lakehouse/tables`` and ``.lakehouse/landing`` in the repo). ``LAKEHOUSE_DQ_MODE``:
        enforce (default: breached expectations fail the job) | report (logged and recorded only).
        """
        env = os.environ if environ is None else environ
        given = overrides or Overrides()

        def pick(override: str | None, variable: str) -> str | None:
            return override or env.get(variable) or None

        on_databricks = "DATABRICKS_RUNTIME_VERSION" in env
        raw_engine = pick(given.engine, "LAKEHOUSE_ENGINE") or ("databricks" if on_databricks else "sail")
        try:
            engine = Engine(raw_engine.strip().lower())
        except ValueError:
            choices = ", ".join(e.value for e in Engine)
            raise SettingsError(f"LAKEHOUSE_ENGINE={raw_engine!r} is not one of: {choices}") from None
        target_env = pick(given.env, "LAKEHOUSE_ENV") or LOCAL_ENV
        catalog = pick(given.catalog, "LAKEHOUSE_CATALOG") or default_catalog(target_env)
        if engine is Engine.DATABRICKS and catalog is None:
            raise SettingsError(
                "on Databricks the tables live in Unity Catalog: name the target with --env dev|prod "
                "(catalog lakehouse_<env>) or --catalog, or LAKEHOUSE_ENV / LAKEHOUSE_CATALOG"
            )
        schemas = {
            layer: pick(given.schemas.get(layer), f"LAKEHOUSE_SCHEMA_{layer.upper()}") or layer for layer in LAYERS
        }
        if catalog is not None:
            default_landing = default_landing_root(catalog)
            lakehouse_root = None
        else:
            default_landing = str(REPO_ROOT / ".lakehouse" / "landing")
            lakehouse_root = Path(pick(given.lakehouse_root, "LAKEHOUSE_ROOT") or REPO_ROOT / ".lakehouse" / "tables")
        dq_mode = env.get("LAKEHOUSE_DQ_MODE", "enforce").strip().lower()
        if dq_mode not in ("enforce", "report"):
            raise SettingsError(f"LAKEHOUSE_DQ_MODE={dq_mode!r} is not one of: enforce, report")
        jars = env.get("LAKEHOUSE_DELTA_JARS")
        return cls(
            env=target_env,
            engine=engine,
            landing_root=pick(given.landing_root, "LAKEHOUSE_LANDING_ROOT") or default_landing,
            lakehouse_root=lakehouse_root.resolve() if lakehouse_root is not None else None,
            catalog=catalog,
            schemas=schemas,
            spark_remote=env.get("SPARK_REMOTE") or None,
            delta_jars_dir=Path(jars) if jars else None,
            dq_enforce=dq_mode == "enforce",
        )


@dataclass(frozen=True)
class Overrides:
    """What the command line says about the target and the engine; each wins over its variable."""

    env: str | None = None
    catalog: str | None = None
    schemas: Mapping[str, str] = field(default_factory=dict)  # layer -> schema
    landing_root: str | None = None
    lakehouse_root: str | None = None
    engine: str | None = None
