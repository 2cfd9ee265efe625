"""The ``runs/submit`` payload of one lakehouse layer: a pure, typed function of the config."""

from __future__ import annotations

from typing import Any

from lakehouse_airflow.config import ENTRY_POINT, PACKAGE_NAME, Compute, DeploymentConfig
from spark_jobs.target import LAYERS


def submit_run_payload(
    layer: str, *, config: DeploymentConfig, batch_date: str, idempotency_token: str | None = None
) -> dict[str, Any]:
    """JSON for ``DatabricksSubmitRunOperator(json=...)``.

    ``batch_date`` and ``idempotency_token`` may be Jinja templates (the operator renders ``json``).
    The task runs our wheel's ``lakehouse_task`` entry point:
    ``<layer> --run-date <batch> --env <env> [--catalog ... --<layer>-schema ... --landing-root ...]``,
    the target passed explicitly for every compute option.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
    parameters = [layer, "--run-date", batch_date, *config.target.job_parameters()]
    wheel = config.target.wheel
    task: dict[str, Any] = {
        "task_key": layer,
        "python_wheel_task": {"package_name": PACKAGE_NAME, "entry_point": ENTRY_POINT, "parameters": parameters},
        "timeout_seconds": config.run_timeout_seconds,
    }
    payload: dict[str, Any] = {
        "run_name": f"lakehouse-{config.env}-{layer}-{batch_date}",
        "timeout_seconds": config.run_timeout_seconds,
        "tasks": [task],
    }
    if config.compute is Compute.SERVERLESS:
        task["environment_key"] = "lakehouse"
        payload["environments"] = [
            {
                "environment_key": "lakehouse",
                "spec": {"environment_version": config.serverless_environment_version, "dependencies": [wheel]},
            }
        ]
    else:
        task["libraries"] = [{"whl": wheel}]
        if config.compute is Compute.EXISTING_CLUSTER:
            task["existing_cluster_id"] = config.existing_cluster_id
        else:
            task["new_cluster"] = {
                "spark_version": config.spark_version,
                "node_type_id": config.node_type_id,
                "num_workers": config.num_workers,
                "data_security_mode": "USER_ISOLATION",
            }
    if idempotency_token is not None:
        payload["idempotency_token"] = idempotency_token
    return payload
