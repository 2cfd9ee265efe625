"""The Databricks bundle, checked without a workspace.

``databricks.yml`` and ``resources/*.yml`` are loaded and their ``${...}`` references resolved per
target, as the CLI resolves them for a given user. Every job, schema and volume is then validated
by the ``databricks-bundles`` models, which reject unknown fields, so a misspelled field fails
here. The rest checks that the bundle, the jobs' naming rule and the Airflow side agree: the
deployed job and the DAG's runs pass the same target to the same entry point.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.jobs import Job
from databricks.bundles.schemas import Schema
from databricks.bundles.volumes import Volume
from lakehouse_airflow.config import ENTRY_POINT, PACKAGE_NAME, SERVERLESS_ENVIRONMENT_VERSION, Target

from scripts.deploy import INSTALL_CLI, airflow_settings, deployed_wheel
from spark_jobs.settings import REPO_ROOT
from spark_jobs.target import ARTIFACTS_VOLUME, LANDING_VOLUME, LAYERS, RAW_SCHEMA, default_catalog

USER = {"userName": "jane.doe@example.com", "short_name": "jane_doe"}
TARGETS = ("dev", "prod")
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def load_bundle(target: str, *, var_overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The bundle's configuration for ``target`` with every reference resolved, or an error."""
    root = yaml.safe_load((REPO_ROOT / "databricks.yml").read_text())
    config: dict[str, Any] = {k: v for k, v in root.items() if k not in ("include", "targets")}
    for pattern in root.get("include", []):
        files = sorted(REPO_ROOT.glob(pattern))
        assert files, f"include {pattern!r} matches no file"
        for path in files:
            config = _merge(config, yaml.safe_load(path.read_text()))
    spec = root["targets"][target]
    config = _merge(config, {k: v for k, v in spec.items() if k not in ("variables", "default", "mode")})
    variables = {name: decl.get("default") for name, decl in config["variables"].items()}
    unknown = set(spec.get("variables", {})) - set(variables)
    assert not unknown, f"target {target} sets undeclared variables {unknown}"
    variables |= spec.get("variables", {}) | (var_overrides or {})
    config["bundle"] = {**config["bundle"], "target": target, "mode": spec.get("mode")}
    workspace = config.setdefault("workspace", {})
    workspace.setdefault(
        "root_path", f"/Workspace/Users/{USER['userName']}/.bundle/{config['bundle']['name']}/{target}"
    )
    workspace["current_user"] = USER
    config["variables"] = {name: {"value": value} for name, value in variables.items()}

    def lookup(ref: str) -> Any:
        if ref.startswith("var."):
            return variables[ref.removeprefix("var.")]
        node: Any = config
        for part in ref.split("."):
            node = node[part]
        return node

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        if isinstance(node, str):
            for _ in range(10):  # references to references (a variable's default naming another)
                resolved = _REFERENCE.sub(lambda m: str(lookup(m.group(1))), node)
                if resolved == node:
                    break
                node = resolved
        return node

    variables = {name: resolve(value) for name, value in variables.items()}
    config["variables"] = {name: {"value": value} for name, value in variables.items()}
    resolved: dict[str, Any] = resolve(config)
    return resolved


@pytest.fixture(scope="module", params=TARGETS)
def bundle(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_bundle(request.param)


def test_every_job_schema_and_volume_is_valid_for_the_real_models(bundle: dict[str, Any]):
    resources = bundle["resources"]
    assert set(resources) == {"jobs", "schemas", "volumes"}
    for name, job in resources["jobs"].items():
        assert Job.from_dict(job).as_dict() == job, name  # a misspelled field raises ValueError
    for name, schema in resources["schemas"].items():
        Schema.from_dict(schema)
        assert set(schema) <= {"catalog_name", "name", "comment", "grants"}, name
    for name, volume in resources["volumes"].items():
        assert Volume.from_dict(volume).as_dict()["name"] == volume["name"], name


def test_a_misspelled_field_is_caught():
    job = load_bundle("prod")["resources"]["jobs"]["lakehouse_layers"]
    job["tasks"][0]["python_wheel_tsak"] = job["tasks"][0].pop("python_wheel_task")
    with pytest.raises(ValueError, match="python_wheel_tsak"):
        Job.from_dict(job)


def test_no_reference_is_left_unresolved(bundle: dict[str, Any]):
    assert "${" not in yaml.safe_dump(bundle)


def test_the_target_names_follow_the_jobs_naming_rule(bundle: dict[str, Any]):
    target = bundle["bundle"]["target"]
    catalog = bundle["variables"]["catalog"]["value"]
    assert catalog == default_catalog(target)
    resources = bundle["resources"]
    assert {s["catalog_name"] for s in resources["schemas"].values()} == {catalog}
    assert set(resources["schemas"]) == {*LAYERS, RAW_SCHEMA}
    raw = resources["schemas"][RAW_SCHEMA]["name"]
    assert {(v["catalog_name"], v["schema_name"], v["name"]) for v in resources["volumes"].values()} == {
        (catalog, raw, LANDING_VOLUME),
        (catalog, raw, ARTIFACTS_VOLUME),
    }
    # the wheel goes to this target's artifacts volume, never another catalog's
    assert bundle["workspace"]["artifact_path"].startswith(f"/Volumes/{catalog}/{raw}/{ARTIFACTS_VOLUME}/")


def test_dev_is_a_development_copy_per_user_and_prod_a_single_copy():
    dev, prod = load_bundle("dev"), load_bundle("prod")
    assert dev["bundle"]["mode"] == "development" and prod["bundle"]["mode"] == "production"
    assert yaml.safe_load((REPO_ROOT / "databricks.yml").read_text())["targets"]["dev"]["default"] is True
    # the CLI refuses a development artifact_path in a volume without the user's name in it
    assert USER["short_name"] in dev["workspace"]["artifact_path"]
    assert all(USER["short_name"] in s["name"] for s in dev["resources"]["schemas"].values())
    assert {s["name"] for s in prod["resources"]["schemas"].values()} == {*LAYERS, RAW_SCHEMA}
    assert prod["workspace"]["root_path"].startswith("/Workspace/Shared/")


def test_the_wheel_is_built_with_uv_and_versioned_per_build():
    # a deploy must not delete the wheel Airflow still runs (LAKEHOUSE_WHEEL) or a roll back needs
    assert load_bundle("prod")["experimental"]["skip_artifact_cleanup"] is True
    artifacts = load_bundle("prod")["artifacts"]
    assert artifacts == {
        "lakehouse_wheel": {"type": "whl", "path": ".", "build": "uv build --wheel", "dynamic_version": True}
    }
    job = load_bundle("prod")["resources"]["jobs"]["lakehouse_layers"]
    (environment,) = job["environments"]
    assert environment["spec"] == {
        "environment_version": SERVERLESS_ENVIRONMENT_VERSION,
        "dependencies": ["../dist/*.whl"],
    }
    assert all(t["environment_key"] == environment["environment_key"] for t in job["tasks"])


def test_the_deployed_job_and_the_dags_runs_pass_the_same_target(bundle: dict[str, Any]):
    """What `make deploy` prints for Airflow resolves, on the Airflow side, to the very parameters
    the bundle's job passes: one target, whoever submits the run."""
    target = bundle["bundle"]["target"]
    catalog = bundle["variables"]["catalog"]["value"]
    raw = bundle["variables"]["raw_schema"]["value"]
    wheel = f"/Volumes/{catalog}/{raw}/artifacts/{target}/.internal/ecommerce_lakehouse-0.1.0+20261201-py3-none-any.whl"
    airflow = Target.from_env(airflow_settings(bundle, target=target, wheel=wheel))
    job = bundle["resources"]["jobs"]["lakehouse_layers"]
    assert [t["task_key"] for t in job["tasks"]] == list(LAYERS)
    for task in job["tasks"]:
        wheel_task = task["python_wheel_task"]
        assert (wheel_task["package_name"], wheel_task["entry_point"]) == (PACKAGE_NAME, ENTRY_POINT)
        layer, run_date_flag, _, *target_parameters = wheel_task["parameters"]
        assert (layer, run_date_flag) == (task["task_key"], "--run-date")
        assert target_parameters == airflow.job_parameters()
    assert airflow.catalog == catalog and airflow.wheel == wheel


def test_the_entry_point_the_job_calls_is_a_console_script_of_the_wheel():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[ENTRY_POINT] == "spark_jobs.cli:main"


def test_deploy_reads_the_wheel_back_from_the_deployed_job():
    job = {
        "job_id": 7,
        "settings": {
            "environments": [
                {
                    "environment_key": "lakehouse",
                    "spec": {
                        "dependencies": [
                            "/Volumes/c/raw/artifacts/prod/.internal/ecommerce_lakehouse-0.1.0+1-py3-none-any.whl"
                        ]
                    },
                }
            ]
        },
    }
    assert deployed_wheel(job).endswith("/.internal/ecommerce_lakehouse-0.1.0+1-py3-none-any.whl")


def test_deploy_without_the_databricks_cli_says_how_to_install_it(tmp_path: Path):
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "python").symlink_to(sys.executable)
    result = subprocess.run(
        [str(python_only / "python"), "scripts/deploy.py", "--target", "dev"],
        cwd=REPO_ROOT,
        env={"PATH": str(python_only), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {INSTALL_CLI}"
