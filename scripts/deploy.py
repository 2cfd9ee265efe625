"""``make deploy TARGET=dev|prod``: deploy the bundle (databricks.yml) and print what Airflow needs.

1. Checks the Databricks CLI (a separate install) and ``uv`` (the bundle builds the wheel with it).
2. Resolves the target with ``databricks bundle validate``: catalog, schemas, volumes, artifact path.
3. First deploy of a target: its artifacts volume does not exist yet, and the CLI refuses an
   ``artifact_path`` in a volume that is not there. That deploy uploads the wheel to the bundle's
   workspace folder and creates the schemas and volumes; the normal deploy follows.
4. ``databricks bundle deploy``: the wheel (built with ``uv build --wheel``, a unique version per
   build), the schemas, the volumes and the ``ecommerce_lakehouse_layers`` job.
5. Prints the Airflow settings of this target (and writes them to ``.databricks/airflow-<target>.env``):
   ``LAKEHOUSE_ENV``, ``LAKEHOUSE_CATALOG``, the schemas, the landing root and the deployed wheel
   (read back from the deployed job, so it is the file the workspace has).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spark_jobs.target import ARTIFACTS_VOLUME, default_landing_root

REPO = Path(__file__).resolve().parent.parent
JOB = "lakehouse_layers"  # resources/lakehouse.job.yml
INSTALL_CLI = (
    "the Databricks CLI (v0.250 or newer) is not installed or not on PATH. Install it, then log in:\n"
    "  curl -fsSL https://raw.githubusercontent.com/databricks/setup-cli/main/install.sh | sh   "
    "# or: brew tap databricks/tap && brew install databricks\n"
    "  databricks auth login --host https://<your-workspace>.cloud.databricks.com\n"
    "See https://docs.databricks.com/dev-tools/cli/install.html"
)


class DeployError(RuntimeError):
    """A step of the deployment failed; the message says which and what to do."""


def airflow_settings(bundle: Mapping[str, Any], *, target: str, wheel: str) -> dict[str, str]:
    """The Airflow-side settings (``lakehouse_airflow.config``) of a deployed target, from the
    bundle's resolved configuration (``databricks bundle validate -o json``)."""
    variables = resolved_variables(bundle)
    return {
        "LAKEHOUSE_ENV": target,
        "LAKEHOUSE_CATALOG": variables["catalog"],
        "LAKEHOUSE_SCHEMA_BRONZE": variables["bronze_schema"],
        "LAKEHOUSE_SCHEMA_SILVER": variables["silver_schema"],
        "LAKEHOUSE_SCHEMA_GOLD": variables["gold_schema"],
        "LAKEHOUSE_LANDING_ROOT": default_landing_root(variables["catalog"], variables["raw_schema"]),
        "LAKEHOUSE_WHEEL": wheel,
        "LAKEHOUSE_COMPUTE": "serverless",
        "LAKEHOUSE_SERVERLESS_ENVIRONMENT_VERSION": str(variables["serverless_environment_version"]),
    }


def resolved_variables(bundle: Mapping[str, Any]) -> dict[str, str]:
    """Variable values of a resolved bundle configuration (``value``, else ``default``)."""
    return {name: str(spec.get("value", spec.get("default"))) for name, spec in bundle["variables"].items()}


def deployed_wheel(job: Mapping[str, Any]) -> str:
    """The wheel the deployed job installs (``databricks jobs get -o json``): the uploaded file."""
    for environment in job["settings"].get("environments", []):
        for dependency in environment.get("spec", {}).get("dependencies", []):
            if dependency.endswith(".whl"):
                return str(dependency)
    raise DeployError(f"the deployed job {job.get('job_id')} installs no wheel; is resources/lakehouse.job.yml intact?")


def _cli(*args: str, capture: bool = True) -> str:
    command = ["databricks", *args]
    print("$", shlex.join(command), file=sys.stderr)
    result = subprocess.run(command, cwd=REPO, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else "see the output above"
        raise DeployError(f"`{shlex.join(command)}` failed (exit {result.returncode}): {detail}")
    return result.stdout if capture else ""


def _volume_exists(full_name: str) -> bool:
    result = subprocess.run(
        ["databricks", "volumes", "read", full_name, "-o", "json"], cwd=REPO, text=True, capture_output=True
    )
    return result.returncode == 0


def deploy(target: str, extra: Sequence[str]) -> dict[str, str]:
    if shutil.which("databricks") is None:
        raise DeployError(INSTALL_CLI)
    if shutil.which("uv") is None:
        raise DeployError("uv is not on PATH: the bundle builds the wheel with `uv build --wheel` (pip install uv)")
    bundle = json.loads(_cli("bundle", "validate", "-t", target, "-o", "json", *extra))
    variables = resolved_variables(bundle)
    volume = f"{variables['catalog']}.{variables['raw_schema']}.{ARTIFACTS_VOLUME}"
    if not _volume_exists(volume):
        print(f"first deploy of {target!r}: creating the schemas and volumes ({volume} does not exist yet)")
        bootstrap_path = f"{bundle['workspace']['root_path']}/artifacts"
        _cli("bundle", "deploy", "-t", target, "--var", f"artifact_path={bootstrap_path}", *extra, capture=False)
    _cli("bundle", "deploy", "-t", target, *extra, capture=False)
    summary = json.loads(_cli("bundle", "summary", "-t", target, "-o", "json", *extra))
    job_id = summary["resources"]["jobs"][JOB]["id"]
    wheel = deployed_wheel(json.loads(_cli("jobs", "get", str(job_id), "-o", "json")))
    settings = airflow_settings(bundle, target=target, wheel=wheel)
    env_file = REPO / ".databricks" / f"airflow-{target}.env"
    env_file.parent.mkdir(exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    host = bundle["workspace"].get("host", "<workspace-host>").removeprefix("https://")
    print(f"\nDeployed {target!r}. Airflow settings for it (also in {env_file.relative_to(REPO)}):\n")
    for key, value in settings.items():
        print(f"  {key}={value}")
    print(
        f"  AIRFLOW_CONN_DATABRICKS_DEFAULT='databricks://:<token of {settings['LAKEHOUSE_ENV']}-job principal>@{host}'"
    )
    print("\nThe connection's principal needs USE_CATALOG on the catalog (granted by its owner).")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", "-t", default="dev", help="bundle target: dev (default) or prod")
    parser.add_argument("extra", nargs="*", help="more `databricks bundle` flags, e.g. --var catalog=main")
    args = parser.parse_args(argv)
    try:
        deploy(args.target, args.extra)
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
