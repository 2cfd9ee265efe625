"""The ``<layer>.dq_metrics`` tables: per-expectation counts of each run, written by every layer."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from spark_jobs import dq
from spark_jobs.tables import TableStore

METRICS_TABLE = "dq_metrics"

# ``dq.METRICS_SCHEMA`` as Arrow (written out: pyspark's converter changed its arguments across 4.x,
# and a job on Databricks runs the runtime's pyspark); a test checks that the two agree.
_ARROW_TYPES = {
    "date": pa.date32(),
    "string": pa.string(),
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us", "UTC"),
}
_ARROW_SCHEMA = pa.schema([(f.name, _ARROW_TYPES[f.dataType.simpleString()]) for f in dq.METRICS_SCHEMA.fields])


def write_metrics(store: TableStore, *, layer: str, run_date: date, rows: list[tuple[object, ...]]) -> None:
    """Replace the run date's slice of ``<layer>.dq_metrics`` for the tables in ``rows``."""
    if not rows:
        return
    tables = sorted({str(r[2]) for r in rows})
    # As Arrow, made here: a local table appends them in this process (no engine round trip); a
    # DataFrame of them is made only for a write through the engine (it asks the session's settings).
    names = dq.METRICS_SCHEMA.fieldNames()
    arrow = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=_ARROW_SCHEMA)
    in_list = ", ".join(f"'{t}'" for t in tables)
    where = f"run_date = DATE'{run_date.isoformat()}' AND table_name IN ({in_list})"
    table = store.ref(layer, METRICS_TABLE)
    store.replace_slice(
        None, table, where=where, partition_by=("run_date",), schema=dq.METRICS_SCHEMA, rows=len(rows), arrow=arrow
    )
