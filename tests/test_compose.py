"""docker-compose.yaml and the Dockerfile, checked as far as a machine without a Docker engine can:
every service, command, connection and setting in them must be one our code and Airflow accept."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from spark_jobs.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def test_services_of_a_complete_airflow_3_deployment():
    assert set(SERVICES) == {
        "postgres", "airflow-init", "sample-data", "local-databricks", "mailpit", *AIRFLOW_SERVICES,
    }  # fmt: skip
    commands = {name: SERVICES[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],  # runs the deadline AsyncCallback
    }
    assert SERVICES["airflow-init"]["command"] == ["airflow", "db", "migrate"]


def test_dependencies_and_volumes_are_declared():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in COMPOSE["volumes"], (name, volume)
            if source.startswith("./") and not source.startswith("./.lakehouse"):
                assert (REPO_ROOT / source).exists(), volume
    for name in AIRFLOW_SERVICES:
        assert SERVICES[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_airflow_settings_are_real_airflow_options_and_agree_with_each_other():
    from airflow.configuration import retrieve_configuration_description

    options = retrieve_configuration_description(include_providers=True)
    for name in AIRFLOW_SERVICES:
        settings = env(name)
        for key in settings:
            if key.startswith("AIRFLOW__"):
                _, section, option = key.lower().split("__", 2)
                assert option in options.get(section, {}).get("options", {}), f"{key} is not an Airflow option"
        assert settings == env(AIRFLOW_SERVICES[0]), "all Airflow components must share one configuration"
    settings = env("airflow-scheduler")
    mounts = dict(v.split(":")[:2][::-1] for v in SERVICES["airflow-scheduler"]["volumes"])
    assert mounts[settings["AIRFLOW__CORE__DAGS_FOLDER"]] == "./dags"
    assert settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
    assert "postgres:5432" in settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # shared secrets: execution API tokens, and what one component encrypts another decrypts
    from cryptography.fernet import Fernet

    assert settings["AIRFLOW__API_AUTH__JWT_SECRET"]
    Fernet(settings["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key


def test_connections_point_at_the_local_services():
    from airflow.models.connection import Connection

    settings = env("airflow-scheduler")
    databricks = Connection(conn_id="databricks_default", uri=settings["AIRFLOW_CONN_DATABRICKS_DEFAULT"])
    api_args = _jobs_api_args()
    assert (databricks.host, databricks.port) == ("local-databricks", api_args.port)
    assert databricks.password == env("local-databricks")["LOCAL_DATABRICKS_TOKEN"]
    smtp = json.loads(settings["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert smtp["host"] == "mailpit" and smtp["port"] == 1025


def _jobs_api_args():
    from local_databricks.server import build_parser

    command = SERVICES["local-databricks"]["command"]
    assert command[0] == "lakehouse-jobs-api"
    return build_parser().parse_args(command[1:])


def test_the_jobs_api_listens_on_its_published_port_and_links_run_pages_there():
    args = _jobs_api_args()
    assert args.host == "0.0.0.0" and f"{args.port}:{args.port}" in SERVICES["local-databricks"]["ports"]
    assert args.public_url == f"http://localhost:{args.port}"
    assert args.state_dir.startswith("/lakehouse/")


def test_sample_data_command_is_one_the_cli_accepts():
    from spark_jobs.cli import build_parser

    script = SERVICES["sample-data"]["command"][-1]
    generate = shlex.split(script.split("||")[1])
    assert generate[0] == "lakehouse"
    args = build_parser().parse_args(generate[1:])
    assert args.command == "generate" and str(args.start_date) in script.split("||")[0]


def test_deployment_and_alert_settings_resolve():
    from lakehouse_airflow.alerts.delivery import AlertConfig
    from lakehouse_airflow.config import DeploymentConfig

    from spark_jobs.settings import Settings

    settings = env("airflow-scheduler")
    assert DeploymentConfig.from_env(settings).env == "dev"
    assert AlertConfig.from_env(settings).emails == ("oncall@example.com",)
    jobs = Settings.from_env(env("local-databricks"))
    assert str(jobs.lakehouse_root) == "/lakehouse/tables"


@pytest.mark.parametrize("service", ["airflow-scheduler", "local-databricks", "sample-data"])
def test_every_lakehouse_variable_is_read_by_the_code(service):
    """A mistyped LAKEHOUSE_* name would silently fall back to a default."""
    source = "\n".join(
        p.read_text()
        for folder in ("spark_jobs", "plugins", "local_databricks")
        for p in (REPO_ROOT / folder).rglob("*.py")
    )
    for key in env(service):
        if key.startswith(("LAKEHOUSE_", "LOCAL_DATABRICKS_")):
            assert f'"{key}"' in source, f"{service}: {key} is read nowhere"


def test_dockerfile_copies_what_exists_and_installs_from_the_lock():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), source
    assert "uv sync --frozen --all-extras" in dockerfile
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert not ignored & {"spark_jobs", "plugins", "dags", "local_databricks", "uv.lock", "pyproject.toml"}
    for name, service in SERVICES.items():
        if "build" in service:
            assert service["build"] == "." and Path(REPO_ROOT / "Dockerfile").exists(), name
