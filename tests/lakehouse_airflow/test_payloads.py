"""The runs/submit payload per compute option, the macros, and the deployment config."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import jinja2
import pytest
from lakehouse_airflow.config import Compute, ConfigError, DeploymentConfig
from lakehouse_airflow.macros import batch_date, idempotency_token
from lakehouse_airflow.payloads import submit_run_payload

WHEEL = "/Volumes/main/artifacts/wheels/ecommerce_lakehouse-0.1.0-py3-none-any.whl"


def test_serverless_payload_is_exact():
    config = DeploymentConfig(
        env="prod", compute=Compute.SERVERLESS, wheel=WHEEL, catalog="main", run_timeout_seconds=7200
    )
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
                    "parameters": ["silver", "--run-date", "2024-01-15", "--catalog", "main"],
                },
                "timeout_seconds": 7200,
                "environment_key": "lakehouse",
            }
        ],
        "environments": [{"environment_key": "lakehouse", "spec": {"client": "2", "dependencies": [WHEEL]}}],
    }


def test_job_cluster_and_existing_cluster_payloads():
    job = DeploymentConfig(env="dev", compute=Compute.JOB_CLUSTER, wheel=WHEEL, num_workers=4)
    task = submit_run_payload("gold", config=job, batch_date="2024-01-15")["tasks"][0]
    assert task["libraries"] == [{"whl": WHEEL}]
    assert task["new_cluster"] == {
        "spark_version": "15.4.x-scala2.12",
        "node_type_id": "i3.xlarge",
        "num_workers": 4,
        "data_security_mode": "USER_ISOLATION",
        "spark_env_vars": {"LAKEHOUSE_ENV": "dev"},
    }
    assert task["python_wheel_task"]["parameters"] == ["gold", "--run-date", "2024-01-15"]
    existing = DeploymentConfig(compute=Compute.EXISTING_CLUSTER, existing_cluster_id="0115-abc", wheel=WHEEL)
    task = submit_run_payload("bronze", config=existing, batch_date="2024-01-15")["tasks"][0]
    assert task["existing_cluster_id"] == "0115-abc" and "new_cluster" not in task


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
        {"LAKEHOUSE_ENV": "prod", "LAKEHOUSE_COMPUTE": "job_cluster", "LAKEHOUSE_DEFERRABLE": "true"}
    )
    assert (config.env, config.compute, config.deferrable) == ("prod", Compute.JOB_CLUSTER, True)
    assert config.wheel_path.startswith("/Volumes/lakehouse_prod/")
    with pytest.raises(ConfigError, match="LAKEHOUSE_COMPUTE='gpu' is not one of"):
        DeploymentConfig.from_env({"LAKEHOUSE_COMPUTE": "gpu"})
    with pytest.raises(ConfigError, match="needs LAKEHOUSE_CLUSTER_ID"):
        DeploymentConfig.from_env({"LAKEHOUSE_COMPUTE": "existing_cluster"})
    with pytest.raises(ConfigError, match="invalid lakehouse deployment setting"):
        DeploymentConfig.from_env({"LAKEHOUSE_RETRIES": "many"})
