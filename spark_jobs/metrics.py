"""The ``<layer>.dq_metrics`` tables: per-expectation counts of each run, written by every layer."""

from __future__ import annotations

from datetime import date

from spark_jobs import dq
from spark_jobs.tables import TableStore

METRICS_TABLE = "dq_metrics"


def write_metrics(store: TableStore, *, layer: str, run_date: date, rows: list[tuple[object, ...]]) -> None:
    """Replace the run date's slice of ``<layer>.dq_metrics`` for the tables in ``rows``."""
    if not rows:
        return
    tables = sorted({str(r[2]) for r in rows})
    df = store.spark.createDataFrame(rows, dq.METRICS_SCHEMA)
    in_list = ", ".join(f"'{t}'" for t in tables)
    where = f"run_date = DATE'{run_date.isoformat()}' AND table_name IN ({in_list})"
    table = store.ref(layer, METRICS_TABLE)
    store.replace_slice(df, table, where=where, partition_by=("run_date",), schema=dq.METRICS_SCHEMA, rows=len(rows))
