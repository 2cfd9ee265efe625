"""
### E-commerce lakehouse: bronze → silver → gold on Databricks

Every day the CRM/ERP exports of day **D** land in the landing zone (a Unity Catalog Volume):
`<landing>/<D>/source_crm/*.csv`, `<landing>/<D>/source_erp/*.csv`. This DAG submits three
Databricks runs in order, each the `lakehouse` entry point of our wheel for batch D:

* **bronze**: raw CSV lines → Delta with ingestion metadata; malformed lines quarantined.
* **silver**: typed, cleaned, de-duplicated current state; data-quality expectations with quarantine.
* **gold**: star schema (`dim_customers`, SCD2 `dim_products`, `fact_sales`) and BI views.

**Schedule**: daily at 03:00 UTC over the interval [D 03:00, D+1 03:00), processing batch D
(the date of the logical date, which is the interval's start). A manual run processes
`batch_date` from its conf if given, else its logical date's batch, else (no logical date) today's.
Every job is idempotent per batch, so re-runs, retries and backfills
(`airflow backfill create --dag-id ecommerce_lakehouse --from-date ... --to-date ...`) are safe.
**Clearing** a task or a day (UI, `airflow tasks clear`) and a reprocess backfill
(`--reprocess-behavior completed|failed`) submit new Databricks runs over the landed files as they
are now; only a restart within one try reconnects to the run that try started, and a new try first
cancels an earlier try's run that is still active (`lakehouse_airflow.operators`).

**Alerts**: email + Slack after a task's final try, a summary when a run fails, "recovered" on
the next success, and a Deadline Alert when a run is not done `LAKEHOUSE_DEADLINE_SECONDS`
(default 4 h) after it was queued.

**Where it runs** is configuration only (`lakehouse_airflow.config`): the Databricks connection
`LAKEHOUSE_DATABRICKS_CONN_ID`, compute (`serverless`, `job_cluster`, `existing_cluster`), wheel,
catalog. Locally the connection points at the local Jobs API (`lakehouse-jobs-api`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, dag
from airflow.timetables.interval import CronDataIntervalTimetable
from lakehouse_airflow.alerts.deadline import deadline_missed
from lakehouse_airflow.alerts.messages import Kind
from lakehouse_airflow.alerts.notifier import LakehouseAlertNotifier
from lakehouse_airflow.config import DeploymentConfig
from lakehouse_airflow.macros import batch_date, idempotency_token
from lakehouse_airflow.operators import LakehouseSubmitRunOperator
from lakehouse_airflow.payloads import LAYERS, submit_run_payload

CONFIG = DeploymentConfig.from_env()
BATCH_DATE = "{{ batch_date(dag_run.conf, logical_date, dag_run.run_after) }}"
TOKEN = "{{ idempotency_token(dag_run, task_instance) }}"
# "gold must be done within N hours": measured from when the run is queued, so that backfills of
# old batches are not late by construction (their logical dates are in the past).
DEADLINE = (
    DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=CONFIG.deadline_seconds),
        callback=AsyncCallback(deadline_missed),  # runs in the triggerer, imported from the installed package
        name="gold_done",
    )
    if CONFIG.deadline_seconds
    else None
)


@dag(
    dag_id="ecommerce_lakehouse",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2010, 1, 1),  # early enough for backfills of historical batches; catchup is off
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lakehouse", "databricks", CONFIG.env],
    user_defined_macros={"batch_date": batch_date, "idempotency_token": idempotency_token},
    deadline=DEADLINE,
    on_failure_callback=LakehouseAlertNotifier(Kind.DAG_FAILED),  # one summary per failed run
    on_success_callback=LakehouseAlertNotifier(Kind.RECOVERED),  # "recovered" after a failed run
    default_args={
        "owner": "data-platform",
        "retries": CONFIG.retries,
        "retry_delay": timedelta(seconds=CONFIG.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(seconds=CONFIG.execution_timeout_seconds),
        # one run at a time writes a layer's tables, even in a backfill with several active runs:
        # the jobs' incremental writes (appends, slice rewrites, MERGE) assume a single writer
        "max_active_tis_per_dag": 1,
        "on_failure_callback": [LakehouseAlertNotifier(Kind.FAILED)],
        "on_retry_callback": [LakehouseAlertNotifier(Kind.RETRY)],
    },
)
def ecommerce_lakehouse() -> None:
    previous = None
    for layer in LAYERS:
        task = LakehouseSubmitRunOperator(
            task_id=layer,
            databricks_conn_id=CONFIG.databricks_conn_id,
            json=submit_run_payload(layer, config=CONFIG, batch_date=BATCH_DATE, idempotency_token=TOKEN),
            polling_period_seconds=CONFIG.polling_period_seconds,
            databricks_retry_limit=5,
            databricks_retry_delay=2,
            deferrable=CONFIG.deferrable,
        )
        if previous is not None:
            previous >> task
        previous = task


ecommerce_lakehouse()
