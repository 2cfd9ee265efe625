"""The Airflow side's settings, resolved from environment variables: the deployment and the alerts.

:class:`Target` says *where* the jobs write and *what* they run: env, catalog, schemas, landing
root, wheel. It is resolved here, once, with the naming rule that the jobs and the bundle share
(``spark_jobs.target``), and passed to every job explicitly as parameters, whatever the compute.
:class:`DeploymentConfig` adds *how* Airflow submits them: connection, compute, timeouts, polling.
:class:`AlertConfig` says who is told, over which connections; :func:`alert_config` reads it once
per process for the notifier and the deadline callback (:func:`clear_cached_config` re-reads it).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType

from spark_jobs.target import LAYERS, LOCAL_ENV, default_catalog, default_landing_root, volume_catalog

PACKAGE_NAME = "ecommerce-lakehouse"
# The wheel's entry point that a Databricks python_wheel_task calls: it returns on success and
# raises on failure (Databricks ignores a returned value). `lakehouse` is the shell command.
ENTRY_POINT = "lakehouse_task"
# Serverless environment of the runs (Python 3.12), as `spec.environment_version` (`client` is deprecated).
SERVERLESS_ENVIRONMENT_VERSION = "4"
# A file name pip installs: <distribution>-<version>[-<build>]-<python>-<abi>-<platform>.whl
_WHEEL_NAME = re.compile(r"^(?P<dist>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class Compute(StrEnum):
    SERVERLESS = "serverless"  # serverless jobs compute: environments + dependencies
    JOB_CLUSTER = "job_cluster"  # a new cluster per run
    EXISTING_CLUSTER = "existing_cluster"  # an all-purpose cluster by id


class ConfigError(ValueError):
    """A deployment setting is missing or invalid."""


def flag(environ: Mapping[str, str], name: str, *, default: bool) -> bool:
    """A boolean setting, parsed one way for the whole Airflow side: 1/true/yes/on (any case) are true."""
    value = environ.get(name)
    return default if value is None or not value.strip() else value.strip().lower() in {"1", "true", "yes", "on"}


def target_env(environ: Mapping[str, str] | None = None) -> str:
    """The target's name for alerts and tags, read on its own: an invalid deployment setting (often
    what an alert is about) can never keep an alert from going out."""
    return (os.environ if environ is None else environ).get("LAKEHOUSE_ENV") or LOCAL_ENV


def _local_wheel() -> str:
    """The wheel ``uv build --wheel`` makes from this checkout. The local Jobs API runs the installed
    package, as a cluster runs the wheel it installed."""
    try:
        current = version(PACKAGE_NAME)
    except PackageNotFoundError:  # pragma: no cover - the DAG's package is always installed
        current = "0+unknown"
    return f"dist/{PACKAGE_NAME.replace('-', '_')}-{current}-py3-none-any.whl"


@dataclass(frozen=True)
class Target:
    """Where the jobs write and what they run. Build it with :meth:`resolve` or :meth:`from_env`."""

    env: str
    catalog: str | None  # None: local Delta folders, wherever the (local) Jobs API keeps them
    schemas: Mapping[str, str]  # layer -> schema
    landing_root: str | None  # None: the local Jobs API's own landing folder
    wheel: str

    @classmethod
    def resolve(
        cls,
        *,
        env: str = LOCAL_ENV,
        catalog: str | None = None,
        schemas: Mapping[str, str] | None = None,
        landing_root: str | None = None,
        wheel: str | None = None,
    ) -> Target:
        """Apply the shared naming rule (a workspace target's catalog is ``lakehouse_<env>``, its
        landing root that catalog's landing volume) and refuse what cannot work on Databricks."""
        catalog = catalog or default_catalog(env)
        unknown = sorted(set(schemas or {}) - set(LAYERS))
        if unknown:
            raise ConfigError(f"schemas given for unknown layers {unknown}; the layers are {list(LAYERS)}")
        resolved = MappingProxyType({layer: (schemas or {}).get(layer) or layer for layer in LAYERS})
        if catalog is None:
            return cls(env, None, resolved, None, wheel or _local_wheel())
        if not wheel:
            raise ConfigError(
                f"LAKEHOUSE_WHEEL is needed for the workspace target {env!r}: the path of the deployed wheel "
                f"that `make deploy TARGET={env}` prints (/Volumes/{catalog}/raw/artifacts/...whl)"
            )
        match = _WHEEL_NAME.match(wheel.rsplit("/", 1)[-1])
        if match is None or match["dist"].lower() != PACKAGE_NAME.replace("-", "_"):
            raise ConfigError(
                f"LAKEHOUSE_WHEEL={wheel!r} is not a wheel of {PACKAGE_NAME} that pip can install "
                f"(expected {PACKAGE_NAME.replace('-', '_')}-<version>-py3-none-any.whl)"
            )
        wheel_catalog = volume_catalog(wheel)
        if wheel_catalog is not None and wheel_catalog != catalog:
            raise ConfigError(
                f"the wheel {wheel} is in catalog {wheel_catalog!r} but the tables are in {catalog!r}: "
                "use the wheel deployed for this target (make deploy), or set LAKEHOUSE_CATALOG to match"
            )
        return cls(env, catalog, resolved, landing_root or default_landing_root(catalog), wheel)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Target:
        """``LAKEHOUSE_ENV`` (``local`` or a workspace target), ``LAKEHOUSE_CATALOG``,
        ``LAKEHOUSE_SCHEMA_BRONZE`` / ``_SILVER`` / ``_GOLD``, ``LAKEHOUSE_WHEEL``, and
        ``LAKEHOUSE_LANDING_ROOT`` for a workspace target (a local landing folder is the local Jobs
        API's own setting, on its machine)."""
        env = target_env(environ)
        catalog = environ.get("LAKEHOUSE_CATALOG") or None
        on_workspace = (catalog or default_catalog(env)) is not None
        return cls.resolve(
            env=env,
            catalog=catalog,
            schemas={layer: environ.get(f"LAKEHOUSE_SCHEMA_{layer.upper()}", "") for layer in LAYERS},
            landing_root=(environ.get("LAKEHOUSE_LANDING_ROOT") or None) if on_workspace else None,
            wheel=environ.get("LAKEHOUSE_WHEEL") or None,
        )

    def job_parameters(self) -> list[str]:
        """The target as the jobs' command-line flags, the same for every compute option: a job
        never guesses its target from ambient state (cluster variables, its own defaults)."""
        parameters = ["--env", self.env]
        if self.catalog is None:
            return parameters
        parameters += ["--catalog", self.catalog]
        for layer in LAYERS:
            parameters += [f"--{layer}-schema", self.schemas[layer]]
        assert self.landing_root is not None
        return [*parameters, "--landing-root", self.landing_root]


@dataclass(frozen=True)
class DeploymentConfig:
    target: Target = field(default_factory=Target.resolve)
    databricks_conn_id: str = "databricks_default"
    compute: Compute = Compute.SERVERLESS
    existing_cluster_id: str | None = None
    serverless_environment_version: str = SERVERLESS_ENVIRONMENT_VERSION
    spark_version: str = "16.4.x-scala2.12"  # an LTS runtime (Python 3.12)
    node_type_id: str = "i3.xlarge"
    num_workers: int = 2
    run_timeout_seconds: int = 3 * 3600
    polling_period_seconds: int = 30
    deferrable: bool = False
    retries: int = 2
    retry_delay_seconds: int = 120
    task_timeout_seconds: int | None = None  # Airflow execution_timeout; default: run timeout + 10 min
    deadline_seconds: int = 4 * 3600  # the whole run (gold done) within this long of being queued; 0: no deadline

    @property
    def env(self) -> str:
        return self.target.env

    @property
    def execution_timeout_seconds(self) -> int:
        return self.task_timeout_seconds or self.run_timeout_seconds + 600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentConfig:
        """``LAKEHOUSE_DATABRICKS_CONN_ID``, ``LAKEHOUSE_COMPUTE`` (serverless | job_cluster |
        existing_cluster), ``LAKEHOUSE_CLUSTER_ID``, ``LAKEHOUSE_SERVERLESS_ENVIRONMENT_VERSION``,
        ``LAKEHOUSE_SPARK_VERSION``, ``LAKEHOUSE_NODE_TYPE``, ``LAKEHOUSE_NUM_WORKERS``,
        ``LAKEHOUSE_RUN_TIMEOUT_SECONDS``, ``LAKEHOUSE_POLLING_SECONDS``, ``LAKEHOUSE_DEFERRABLE``,
        ``LAKEHOUSE_RETRIES``, ``LAKEHOUSE_RETRY_DELAY_SECONDS``, ``LAKEHOUSE_TASK_TIMEOUT_SECONDS``,
        ``LAKEHOUSE_DEADLINE_SECONDS``, and the target's (:meth:`Target.from_env`)."""
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
        target = Target.from_env(env)
        try:
            return cls(
                target=target,
                databricks_conn_id=env.get("LAKEHOUSE_DATABRICKS_CONN_ID", "databricks_default"),
                compute=compute,
                existing_cluster_id=cluster_id,
                serverless_environment_version=env.get(
                    "LAKEHOUSE_SERVERLESS_ENVIRONMENT_VERSION", cls.serverless_environment_version
                ),
                spark_version=env.get("LAKEHOUSE_SPARK_VERSION", cls.spark_version),
                node_type_id=env.get("LAKEHOUSE_NODE_TYPE", cls.node_type_id),
                num_workers=int(env.get("LAKEHOUSE_NUM_WORKERS", cls.num_workers)),
                run_timeout_seconds=int(env.get("LAKEHOUSE_RUN_TIMEOUT_SECONDS", cls.run_timeout_seconds)),
                polling_period_seconds=int(env.get("LAKEHOUSE_POLLING_SECONDS", cls.polling_period_seconds)),
                deferrable=flag(env, "LAKEHOUSE_DEFERRABLE", default=False),
                retries=int(env.get("LAKEHOUSE_RETRIES", cls.retries)),
                retry_delay_seconds=int(env.get("LAKEHOUSE_RETRY_DELAY_SECONDS", cls.retry_delay_seconds)),
                task_timeout_seconds=int(env["LAKEHOUSE_TASK_TIMEOUT_SECONDS"])
                if env.get("LAKEHOUSE_TASK_TIMEOUT_SECONDS")
                else None,
                deadline_seconds=int(env.get("LAKEHOUSE_DEADLINE_SECONDS", cls.deadline_seconds)),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid lakehouse deployment setting: {exc}") from None


# One address: no spaces, commas, semicolons or angle brackets, one @ with text on both sides.
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")


@dataclass(frozen=True)
class AlertConfig:
    """Who is alerted, over which Airflow connections, and for which events."""

    env: str = LOCAL_ENV  # the target's name in the alert's subject (see :func:`target_env`)
    emails: tuple[str, ...] = ()
    smtp_conn_id: str = "smtp_default"
    slack_conn_id: str = "slack_webhook_default"
    from_email: str = "lakehouse-alerts@localhost"
    notify_on_retry: bool = False
    notify_on_recovery: bool = True
    channels: tuple[str, ...] = field(default=("email", "slack"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertConfig:
        """``LAKEHOUSE_ALERT_EMAILS`` (comma-separated), ``LAKEHOUSE_SMTP_CONN_ID``,
        ``LAKEHOUSE_SLACK_CONN_ID``, ``LAKEHOUSE_ALERT_FROM``, ``LAKEHOUSE_ALERT_ON_RETRY``,
        ``LAKEHOUSE_ALERT_ON_RECOVERY``, and ``LAKEHOUSE_ENV`` for the subject."""
        env = os.environ if environ is None else environ
        emails = tuple(e.strip() for e in env.get("LAKEHOUSE_ALERT_EMAILS", "").split(",") if e.strip())
        invalid = [e for e in emails if not _EMAIL.fullmatch(e)]
        if invalid:
            raise ConfigError(
                f"LAKEHOUSE_ALERT_EMAILS: {invalid} not an email address; separate the recipients with commas"
            )
        return cls(
            env=target_env(env),
            emails=emails,
            smtp_conn_id=env.get("LAKEHOUSE_SMTP_CONN_ID", cls.smtp_conn_id),
            slack_conn_id=env.get("LAKEHOUSE_SLACK_CONN_ID", cls.slack_conn_id),
            from_email=env.get("LAKEHOUSE_ALERT_FROM", cls.from_email),
            notify_on_retry=flag(env, "LAKEHOUSE_ALERT_ON_RETRY", default=False),
            notify_on_recovery=flag(env, "LAKEHOUSE_ALERT_ON_RECOVERY", default=True),
        )


@functools.cache
def alert_config() -> AlertConfig:
    """This process's alert settings, read from the environment on first use. An invalid setting
    raises :class:`ConfigError` (each time: failures are not cached)."""
    return AlertConfig.from_env()


def clear_cached_config() -> None:
    """Forget the settings read so far; the next use reads the environment again (tests)."""
    alert_config.cache_clear()
