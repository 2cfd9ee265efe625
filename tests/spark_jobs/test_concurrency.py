"""Two ``lakehouse <layer> --run-date D`` processes at once on the same tables (a run that outlived
its timed-out task, plus the retry): never duplicate keys, and the tables end as one writer's.

Real processes on real Delta tables. Each step of the race starts both processes' job at the same
moment (a file barrier after the engine has started), on a new day (the slice is empty: the
"append" decisions), on the first day (the tables are created) and on a re-run (replaceWhere and
merge paths), so that both decide from the same snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_jobs.pipeline import run_layers
from spark_jobs.settings import REPO_ROOT, Settings
from spark_jobs.silver.tables import SILVER_TABLES
from spark_jobs.sources import SOURCES
from spark_jobs.tables import TableStore
from spark_jobs.target import LAYERS
from tests.spark_jobs.test_pipeline import snapshot

pytestmark = pytest.mark.delta

START = date(2014, 1, 29)
DAYS = [START + timedelta(days=i) for i in range(3)]
SILVER_KEYS = {name: spec.keys for name, spec in SILVER_TABLES.items()}
GOLD_KEYS = {
    "dim_customers": ("customer_key",),
    "dim_products": ("product_key",),
    "fact_sales": ("order_number", "product_number"),
}

# One writer: starts its engine, then for every step waits until every writer is ready and runs
# the real CLI entry point. Records the exit status of each step (an error is a clean failure).
_WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from spark_jobs.cli import main
    from spark_jobs.engine import get_spark
    from spark_jobs.settings import Settings

    barrier, me, writers, roots, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:6], sys.argv[6:]
    get_spark(Settings.from_env())
    results = []
    for i, step in enumerate(steps):
        layer, day = step.split("@")
        open(os.path.join(barrier, f"{i}.{me}"), "w").close()
        while sum(n.startswith(f"{i}.") for n in os.listdir(barrier)) < writers:
            time.sleep(0.002)
        argv = [layer, "--run-date", day, "--landing-root", roots[0], "--lakehouse-root", roots[1]]
        try:
            main(argv)  # the Databricks entry point: returns on success, raises on failure
            rc = 0
        except BaseException as exc:  # a clean failure: the step's error, reported
            rc = repr(exc)[:300]
        results.append([step, rc])
    print("RESULTS " + json.dumps(results))
    """
)


def race(landing: Path, tables: Path, barrier: Path, steps: list[str], writers: int = 2) -> list[list[list]]:
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(barrier), str(n), str(writers), str(landing), str(tables), *steps],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for n in range(writers)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    results = []
    for out, err in outputs:
        line = next((x for x in out.splitlines() if x.startswith("RESULTS ")), None)
        assert line is not None, err[-3000:]
        results.append(json.loads(line[len("RESULTS ") :]))
    return results


def data_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip(b"\r"))


def assert_no_duplicates(spark, settings: Settings, landing: Path) -> None:
    store = TableStore(spark, settings)
    for name, source in SOURCES.items():
        bronze = store.read(settings.table("bronze", name))
        rejects = store.read(settings.table("bronze", name + "_quarantine"))
        for day in DAYS:
            path = landing / day.isoformat() / source.system / source.file_name
            if path.exists():
                batch = F.col("_batch_date") == F.lit(day)
                assert bronze.filter(batch).count() + rejects.filter(batch).count() == data_lines(path), (name, day)
    for layer, keyed in (("silver", SILVER_KEYS), ("gold", GOLD_KEYS)):
        for name, keys in keyed.items():
            table = store.read(settings.table(layer, name))
            assert table.count() == table.select(*keys).distinct().count(), f"{layer}.{name} has duplicate keys"


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    from spark_jobs.sample_data import generate

    root = tmp_path_factory.mktemp("landing")
    generate(root, scale=0.01, start_date=START, days=len(DAYS) - 1, seed=5)
    return root


def test_concurrent_writers_of_a_layer_never_leave_duplicate_keys_and_a_rerun_converges(spark, landing, tmp_path):
    tables = tmp_path / "tables"
    # every day raced layer by layer (new slices, new keys, table creation on the first day), then a
    # re-run of a day raced (slices replaced, merges that change nothing or rows)
    steps = [f"{layer}@{day.isoformat()}" for day in DAYS for layer in LAYERS]
    steps += [f"{layer}@{DAYS[1].isoformat()}" for layer in LAYERS]
    results = race(landing, tables, tmp_path / "barrier", steps)
    settings = Settings.from_env({"LAKEHOUSE_LANDING_ROOT": str(landing), "LAKEHOUSE_ROOT": str(tables)})
    failed = [(step, rc) for writer in results for step, rc in writer if rc != 0]
    for i, step in enumerate(steps):  # every step succeeded in at least one writer
        assert any(writer[i][1] == 0 for writer in results), (step, failed)

    assert_no_duplicates(spark, settings, landing)

    # whatever failed cleanly, a re-run converges to what a single writer produces
    for step, _ in failed:
        layer, day = step.split("@")
        run_layers(spark, settings, date.fromisoformat(day), [layer])
    reference = Settings.from_env({"LAKEHOUSE_LANDING_ROOT": str(landing), "LAKEHOUSE_ROOT": str(tmp_path / "ref")})
    for day in DAYS:
        run_layers(spark, reference, day)
    assert snapshot(spark, settings) == snapshot(spark, reference)
