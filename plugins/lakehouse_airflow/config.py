"""Deployment settings of the DAG, resolved once from environment variables.

Jobs resolve *where tables live* themselves (``spark_jobs.settings``); this says *how Airflow
submits them*: which Databricks connection, which compute, which wheel, timeouts and polling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

PACKAGE_NAME = "ecommerce-lakehouse"
ENTRY_POINT = "lakehouse_task"


class Compute(StrEnum):
    SERVERLESS = "serverless"  # serverless jobs compute: environments + dependencies
    JOB_CLUSTER = "job_cluster"  # a new cluster per run
    EXISTING_CLUSTER = "existing_cluster"  # an all-purpose cluster by id


class ConfigError(ValueError):
    """A deployment setting is missing or invalid."""


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DeploymentConfig:
    env: str = "local"
    databricks_conn_id: str = "databricks_default"
    compute: Compute = Compute.SERVERLESS
    existing_cluster_id: str | None = None
    spark_version: str = "15.4.x-scala2.12"
    node_type_id: str = "i3.xlarge"
    num_workers: int = 2
    wheel: str | None = None
    catalog: str | None = None
    run_timeout_seconds: int = 3 * 3600
    polling_period_seconds: int = 30
    deferrable: bool = False
    retries: int = 2
    retry_delay_seconds: int = 120
    task_timeout_seconds: int | None = None  # Airflow execution_timeout; default: run timeout + 10 min
    deadline_seconds: int = 4 * 3600  # the whole run (gold done) within this long of being queued; 0: no deadline

    @property
    def execution_timeout_seconds(self) -> int:
        return self.task_timeout_seconds or self.run_timeout_seconds + 600

    @property
    def wheel_path(self) -> str:
        if self.wheel:
            return self.wheel
        catalog = self.catalog or f"lakehouse_{self.env}"
        return f"/Volumes/{catalog}/artifacts/wheels/ecommerce_lakehouse-py3-none-any.whl"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentConfig:
        """``LAKEHOUSE_ENV``, ``LAKEHOUSE_DATABRICKS_CONN_ID``, ``LAKEHOUSE_COMPUTE`` (serverless |
        job_cluster | existing_cluster), ``LAKEHOUSE_CLUSTER_ID``, ``LAKEHOUSE_SPARK_VERSION``,
        ``LAKEHOUSE_NODE_TYPE``, ``LAKEHOUSE_NUM_WORKERS``, ``LAKEHOUSE_WHEEL``, ``LAKEHOUSE_CATALOG``,
        ``LAKEHOUSE_RUN_TIMEOUT_SECONDS``, ``LAKEHOUSE_POLLING_SECONDS``, ``LAKEHOUSE_DEFERRABLE``,
        ``LAKEHOUSE_RETRIES``, ``LAKEHOUSE_RETRY_DELAY_SECONDS``, ``LAKEHOUSE_TASK_TIMEOUT_SECONDS``,
        ``LAKEHOUSE_DEADLINE_SECONDS``."""
        env = os.environ if environ is None else environ
        try:
            compute = Compute(env.get("LAKEHOUSE_COMPUTE", Compute.SERVERLESS.value))
        except ValueError:
            raise ConfigError(
                f"LAKEHOUSE_COMPUTE={env['LAKEHOUSE_COMPUTE']!r} is not one of: {', '.join(c.value for c in Compute)}"
            ) from None
        cluster_id = env.get("LAKEHOUSE_CLUSTER_ID") or None
        if compute is Compute.EXISTING_CLUSTER and not cluster_id:
            raise ConfigError("LAKEHOUSE_COMPUTE=existing_cluster needs LAKEHOUSE_CLUSTER_ID")
        try:
            return cls(
                env=env.get("LAKEHOUSE_ENV", "local"),
                databricks_conn_id=env.get("LAKEHOUSE_DATABRICKS_CONN_ID", "databricks_default"),
                compute=compute,
                existing_cluster_id=cluster_id,
                spark_version=env.get("LAKEHOUSE_SPARK_VERSION", cls.spark_version),
                node_type_id=env.get("LAKEHOUSE_NODE_TYPE", cls.node_type_id),
                num_workers=int(env.get("LAKEHOUSE_NUM_WORKERS", cls.num_workers)),
                wheel=env.get("LAKEHOUSE_WHEEL") or None,
                catalog=env.get("LAKEHOUSE_CATALOG") or None,
                run_timeout_seconds=int(env.get("LAKEHOUSE_RUN_TIMEOUT_SECONDS", cls.run_timeout_seconds)),
                polling_period_seconds=int(env.get("LAKEHOUSE_POLLING_SECONDS", cls.polling_period_seconds)),
                deferrable=_bool(env.get("LAKEHOUSE_DEFERRABLE", "false")),
                retries=int(env.get("LAKEHOUSE_RETRIES", cls.retries)),
                retry_delay_seconds=int(env.get("LAKEHOUSE_RETRY_DELAY_SECONDS", cls.retry_delay_seconds)),
                task_timeout_seconds=int(env["LAKEHOUSE_TASK_TIMEOUT_SECONDS"])
                if env.get("LAKEHOUSE_TASK_TIMEOUT_SECONDS")
                else None,
                deadline_seconds=int(env.get("LAKEHOUSE_DEADLINE_SECONDS", cls.deadline_seconds)),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid lakehouse deployment setting: {exc}") from None
