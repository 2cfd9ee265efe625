"""How a deployment target names its Unity Catalog objects: one rule for the jobs, the DAG and the bundle.

A target is an environment name. ``local`` (the default) keeps tables in local Delta folders; any
other name (``dev``, ``prod``, the bundle's targets) is a Databricks workspace target whose tables
live in the catalog ``lakehouse_<env>`` unless a catalog is given. In that catalog the bundle
(``databricks.yml``) declares the schemas ``bronze``, ``silver``, ``gold`` and ``raw``, and in
``raw`` the volumes ``landing`` (daily exports) and ``artifacts`` (deployed wheels).

Pure standard library: the Airflow side (no pyspark) resolves the same names from it.
"""

from __future__ import annotations

LAYERS = ("bronze", "silver", "gold")
LOCAL_ENV = "local"
RAW_SCHEMA = "raw"  # the schema holding the landing and artifacts volumes
LANDING_VOLUME = "landing"
ARTIFACTS_VOLUME = "artifacts"


def default_catalog(env: str) -> str | None:
    """The catalog of a target: none for ``local``, ``lakehouse_<env>`` for a workspace target."""
    return None if env == LOCAL_ENV else f"lakehouse_{env}"


def volume_path(catalog: str, schema: str, volume: str) -> str:
    return f"/Volumes/{catalog}/{schema}/{volume}"


def default_landing_root(catalog: str, raw_schema: str = RAW_SCHEMA) -> str:
    """Where a catalog's daily exports land: its ``landing`` volume."""
    return volume_path(catalog, raw_schema, LANDING_VOLUME)


def volume_catalog(path: str) -> str | None:
    """The catalog of a ``/Volumes/<catalog>/<schema>/<volume>/...`` path; None for other paths."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[0] == "" and parts[1] == "Volumes" and all(parts[2:5]):
        return parts[2]
    return None
