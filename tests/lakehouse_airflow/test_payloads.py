"""The runs/submit payload per compute option, the macros, and the deployment config."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from types import SimpleNamespace

import jinja2
import pytest
from databricks.sdk.service.jobs import JobEnvironment, JobsAPI, SubmitTask
from lakehouse_airflow.config import Compute, ConfigError, DeploymentConfig, Target
from lakehouse_airflow.macros import batch_date, idempotency_token
from lakehouse_airflow.payloads import submit_run_payload

from spark_jobs.cli import build_parser
from spark_jobs.settings import Overrides, Settings
from spark_jobs.target import LAYERS

WHEEL = "/Volumes/main/raw/artifacts/prod/.internal/ecommerce_lakehouse-0.1.0+20261201-py3-none-any.whl"
PROD = Target.resolve(env="prod", catalog="main", wheel=WHEEL)
PROD_PARAMETERS = [
    "--env", "prod", "--catalog", "main",
    "--bronze-schema", "bronze", "--silver-schema", "silver", "--gold-schema", "gold",
    "--landing-root", "/Volumes/main/raw/landing",
]  # fmt: skip


def test_serverless_payload_is_exact():
    config = DeploymentConfig(target=PROD, compute=Compute.SERVERLESS, run_timeout_seconds=7200)
    assert submit_run_payload("silver", config=config, batch_date="2024-01-15", idempotency_token="tok") == {
        "run_name": "lakehouse-prod-silver-2024-01-15",
        "timeout_seconds": 7200,
        "idempotency_token": "tok",
        "tasks": [
            {
                "task_key": "silver",
                "python_wheel_task": {
                    "package_name": "ecommerce-lakehouse",
                    "entry_point": "lakehouse_task",
                    "parameters": ["silver", "--run-date", "2024-01-15", *PROD_PARAMETERS],
                },
                "timeout_seconds": 7200,
                "environment_key": "lakehouse",
            }
        ],
        "environments": [
            {"environment_key": "lakehouse", "spec": {"environment_version": "4", "dependencies": [WHEEL]}}
        ],
    }


def test_job_cluster_and_existing_cluster_payloads():
    job = DeploymentConfig(target=PROD, compute=Compute.JOB_CLUSTER, num_workers=4)
    task = submit_run_payload("gold", config=job, batch_date="2024-01-15")["tasks"][0]
    assert task["libraries"] == [{"whl": WHEEL}]
    assert task["new_cluster"] == {
        "spark_version": "16.4.x-scala2.12",
        "node_type_id": "i3.xlarge",
        "num_workers": 4,
        "data_security_mode": "USER_ISOLATION",
    }
    assert task["python_wheel_task"]["parameters"] == ["gold", "--run-date", "2024-01-15", *PROD_PARAMETERS]
    existing = DeploymentConfig(target=PROD, compute=Compute.EXISTING_CLUSTER, existing_cluster_id="0115-abc")
    task = submit_run_payload("bronze", config=existing, batch_date="2024-01-15")["tasks"][0]
    assert task["existing_cluster_id"] == "0115-abc" and "new_cluster" not in task


ENVIRONS = {
    "local": {},
    "local, catalog set": {"LAKEHOUSE_CATALOG": "sandbox", "LAKEHOUSE_WHEEL": WHEEL.replace("/main/", "/sandbox/")},
    "prod, no catalog": {"LAKEHOUSE_ENV": "prod", "LAKEHOUSE_WHEEL": WHEEL.replace("/main/", "/lakehouse_prod/")},
    "prod, catalog set": {"LAKEHOUSE_ENV": "prod", "LAKEHOUSE_CATALOG": "main", "LAKEHOUSE_WHEEL": WHEEL},
    "dev, per-user schemas": {
        "LAKEHOUSE_ENV": "dev",
        "LAKEHOUSE_SCHEMA_BRONZE": "jane_bronze",
        "LAKEHOUSE_SCHEMA_SILVER": "jane_silver",
        "LAKEHOUSE_SCHEMA_GOLD": "jane_gold",
        "LAKEHOUSE_LANDING_ROOT": "/Volumes/lakehouse_dev/jane_raw/landing",
        "LAKEHOUSE_WHEEL": "/Volumes/lakehouse_dev/jane_raw/artifacts/dev/.internal/ecommerce_lakehouse-0.1.0+7-py3-none-any.whl",
    },
}
COMPUTE = {
    Compute.SERVERLESS: {},
    Compute.JOB_CLUSTER: {"LAKEHOUSE_COMPUTE": "job_cluster"},
    Compute.EXISTING_CLUSTER: {"LAKEHOUSE_COMPUTE": "existing_cluster", "LAKEHOUSE_CLUSTER_ID": "0115-abc"},
}


@pytest.mark.parametrize("compute", list(COMPUTE))
@pytest.mark.parametrize("case", list(ENVIRONS))
def test_every_compute_option_passes_the_whole_target_to_the_job(case: str, compute: Compute):
    """The job gets env, catalog, schemas and landing root as parameters whatever the compute, and
    runs the wheel of the same catalog: the job side never falls back on its own defaults."""
    environ = ENVIRONS[case] | COMPUTE[compute]
    config = DeploymentConfig.from_env(environ)
    payload = submit_run_payload("bronze", config=config, batch_date="2024-01-15")
    (task,) = payload["tasks"]
    layer, flag, batch, *given = task["python_wheel_task"]["parameters"]
    assert (layer, flag, batch) == ("bronze", "--run-date", "2024-01-15")
    # the job resolves exactly the target the Airflow side resolved
    jobs = build_parser().parse_args(task["python_wheel_task"]["parameters"])
    settings = Settings.from_env(
        {"LAKEHOUSE_ENGINE": "databricks"} if config.target.catalog else {}, overrides=_overrides(jobs)
    )
    target = config.target
    assert settings.env == target.env == environ.get("LAKEHOUSE_ENV", "local")
    assert settings.catalog == target.catalog
    if target.catalog is None:
        assert given == ["--env", "local"]
    else:
        assert settings.landing_root == target.landing_root
        assert {layer: settings.schemas[layer] for layer in LAYERS} == dict(target.schemas)
        wheel = (
            payload["environments"][0]["spec"]["dependencies"][0]
            if compute is Compute.SERVERLESS
            else task["libraries"][0]["whl"]
        )
        assert wheel == target.wheel and wheel.startswith(f"/Volumes/{target.catalog}/")
    assert "spark_env_vars" not in task.get("new_cluster", {})


def _overrides(args) -> Overrides:
    return Overrides(
        env=args.env,
        catalog=args.catalog,
        schemas={layer: name for layer in LAYERS if (name := getattr(args, f"{layer}_schema"))},
        landing_root=args.landing_root,
    )


@pytest.mark.parametrize("compute", list(COMPUTE))
@pytest.mark.parametrize("case", list(ENVIRONS))
def test_payloads_round_trip_through_the_sdk_models(case: str, compute: Compute):
    """Every field is one the Databricks SDK knows (its models drop unknown keys, so compare)."""
    config = DeploymentConfig.from_env(ENVIRONS[case] | COMPUTE[compute])
    payload = submit_run_payload("gold", config=config, batch_date="{{ ds }}", idempotency_token="tok")
    assert set(payload) <= set(inspect.signature(JobsAPI.submit).parameters) - {"self"}
    for task in payload["tasks"]:
        assert SubmitTask.from_dict(task).as_dict() == task
    for environment in payload.get("environments", []):
        assert JobEnvironment.from_dict(environment).as_dict() == environment
        assert "client" not in environment["spec"]


def test_a_workspace_target_needs_an_installable_wheel_of_its_own_catalog():
    with pytest.raises(ConfigError, match="LAKEHOUSE_WHEEL is needed for the workspace target 'prod'"):
        DeploymentConfig.from_env({"LAKEHOUSE_ENV": "prod"})
    with pytest.raises(ConfigError, match="is not a wheel of ecommerce-lakehouse that pip can install"):
        Target.resolve(env="prod", wheel="/Volumes/lakehouse_prod/raw/artifacts/ecommerce_lakehouse-py3-none-any.whl")
    with pytest.raises(ConfigError, match="is in catalog 'lakehouse_prod' but the tables are in 'lakehouse_dev'"):
        Target.resolve(env="dev", wheel=WHEEL.replace("/main/", "/lakehouse_prod/"))
    with pytest.raises(ConfigError, match="schemas given for unknown layers"):
        Target.resolve(env="prod", wheel=WHEEL, schemas={"platinum": "x"})


def test_serverless_environment_version_is_configurable():
    config = DeploymentConfig.from_env(
        ENVIRONS["prod, catalog set"] | {"LAKEHOUSE_SERVERLESS_ENVIRONMENT_VERSION": "5"}
    )
    payload = submit_run_payload("bronze", config=config, batch_date="2024-01-15")
    assert payload["environments"][0]["spec"]["environment_version"] == "5"


def test_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="unknown layer 'platinum'"):
        submit_run_payload("platinum", config=DeploymentConfig(), batch_date="2024-01-15")


def _render(template: str, **context) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(batch_date=batch_date, idempotency_token=idempotency_token, **context)


def test_batch_date_template_renders_for_scheduled_manual_and_dateless_runs():
    template = "{{ batch_date(dag_run.conf, logical_date, dag_run.run_after) }}"
    after = datetime(2024, 3, 2, 9, 30, tzinfo=UTC)
    run = lambda conf: SimpleNamespace(conf=conf, run_after=after)  # noqa: E731
    scheduled = datetime(2024, 1, 15, 3, tzinfo=UTC)
    assert _render(template, logical_date=scheduled, dag_run=run({})) == "2024-01-15"
    assert _render(template, logical_date=scheduled, dag_run=run({"batch_date": "2023-12-31"})) == "2023-12-31"
    assert _render(template, logical_date=None, dag_run=run(None)) == "2024-03-02"
    with pytest.raises(ValueError, match="Invalid isoformat"):
        _render(template, logical_date=None, dag_run=run({"batch_date": "15/01/2024"}))


def test_idempotency_token_is_stable_per_try_and_new_per_retry():
    run = SimpleNamespace(dag_id="ecommerce_lakehouse", run_id="scheduled__2024-01-15T03:00:00+00:00")
    try1 = SimpleNamespace(task_id="silver", try_number=1)
    token = idempotency_token(run, try1)
    assert token == idempotency_token(run, SimpleNamespace(task_id="silver", try_number=1))
    assert token != idempotency_token(run, SimpleNamespace(task_id="silver", try_number=2))
    assert token != idempotency_token(run, SimpleNamespace(task_id="gold", try_number=1))
    assert len(token) <= 64


def test_config_from_env_and_its_errors():
    config = DeploymentConfig.from_env(
        ENVIRONS["prod, no catalog"] | {"LAKEHOUSE_COMPUTE": "job_cluster", "LAKEHOUSE_DEFERRABLE": "true"}
    )
    assert (config.env, config.compute, config.deferrable) == ("prod", Compute.JOB_CLUSTER, True)
    assert config.target.catalog == "lakehouse_prod"
    assert config.target.landing_root == "/Volumes/lakehouse_prod/raw/landing"
    with pytest.raises(ConfigError, match="LAKEHOUSE_COMPUTE='gpu' is not one of"):
        DeploymentConfig.from_env({"LAKEHOUSE_COMPUTE": "gpu"})
    with pytest.raises(ConfigError, match="needs LAKEHOUSE_CLUSTER_ID"):
        DeploymentConfig.from_env({"LAKEHOUSE_COMPUTE": "existing_cluster"})
    with pytest.raises(ConfigError, match="invalid lakehouse deployment setting"):
        DeploymentConfig.from_env({"LAKEHOUSE_RETRIES": "many"})
