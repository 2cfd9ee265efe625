"""The ``runs/submit`` payload of one lakehouse layer: a pure, typed function of the config."""

from __future__ import annotations

from typing import Any

from lakehouse_airflow.config import ENTRY_POINT, PACKAGE_NAME, Compute, DeploymentConfig

LAYERS = ("bronze", "silver", "gold")


def submit_run_payload(
    layer: str, *, config: DeploymentConfig, batch_date: str, idempotency_token: str | None = None
) -> dict[str, Any]:
    """JSON for ``DatabricksSubmitRunOperator(json=...)``.

    ``batch_date`` and ``idempotency_token`` may be Jinja templates (the operator renders ``json``).
    The task runs our wheel's ``lakehouse`` entry point: ``lakehouse <layer> --run-date <batch>``.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
    parameters = [layer, "--run-date", batch_date]
    if config.catalog:
        parameters += ["--catalog", config.catalog]
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
            {"environment_key": "lakehouse", "spec": {"client": "2", "dependencies": [config.wheel_path]}}
        ]
    else:
        task["libraries"] = [{"whl": config.wheel_path}]
        if config.compute is Compute.EXISTING_CLUSTER:
            task["existing_cluster_id"] = config.existing_cluster_id
        else:
            task["new_cluster"] = {
                "spark_version": config.spark_version,
                "node_type_id": config.node_type_id,
                "num_workers": config.num_workers,
                "data_security_mode": "USER_ISOLATION",
                "spark_env_vars": {"LAKEHOUSE_ENV": config.env},
            }
    if idempotency_token is not None:
        payload["idempotency_token"] = idempotency_token
    return payload
