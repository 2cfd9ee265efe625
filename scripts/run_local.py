"""``make run``: the DAG end to end on this machine, through real Airflow and real HTTP.

Generates sample exports if there are none, starts the local Databricks Jobs API, runs the
``ecommerce_lakehouse`` DAG for one batch date with ``dag.test()`` (SQLite metadata in the
git-ignored ``.airflow/``), prints what landed where, and stops what it started.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _setup_env(airflow_home: Path, port_holder: dict[str, int]) -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("LAKEHOUSE_POLLING_SECONDS", "2")
    os.environ.setdefault("LAKEHOUSE_RETRIES", "1")
    # dag.test() has no scheduler to notice a missed deadline, and Airflow 3.3.2's dag.test() fails a
    # successful run of a DAG with a deadline (apache/airflow#73428): run without one here.
    os.environ.setdefault("LAKEHOUSE_DEADLINE_SECONDS", "0")
    os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = (
        f"databricks://:local-dev-token@127.0.0.1:{port_holder['port']}/http"
    )


def summary(tables_root: Path, run_date: date) -> str:
    """Row counts of every Delta table and the run's data-quality results (read with ``deltalake``)."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from spark_jobs.target import LAYERS

    lines = [f"Delta tables under {tables_root}:"]
    for layer in LAYERS:
        folder = tables_root / layer
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if (p / "_delta_log").is_dir()):
            rows = DeltaTable(str(path)).to_pyarrow_dataset().count_rows()
            lines.append(f"  {layer}.{path.name:<40} {rows:>10} rows")
    for layer in LAYERS:  # those that write a dq_metrics table (silver, gold)
        path = tables_root / layer / "dq_metrics"
        if not (path / "_delta_log").is_dir():
            continue
        metrics = DeltaTable(str(path)).to_pyarrow_table()
        metrics = metrics.filter(pc.equal(metrics["run_date"], run_date)).to_pylist()
        lines.append(f"Data quality ({layer}, run {run_date}):")
        for m in sorted(metrics, key=lambda r: (r["table_name"], r["expectation"] != "*", r["expectation"])):
            if m["expectation"] == "*":
                lines.append(
                    f"  {m['table_name']}: {m['rows_in']} in, {m['written']} written, "
                    f"{m['quarantined'] or 0} quarantined, {m['deduplicated'] or 0} superseded"
                )
            elif (m["warned"] or 0) + (m["quarantined"] or 0) + (m["failed"] or 0):
                bad = (m["warned"] or 0) + (m["quarantined"] or 0) + (m["failed"] or 0)
                lines.append(f"      [{m['action']}] {m['expectation']}: {bad}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-date", type=date.fromisoformat, default=date(2014, 1, 29))
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()

    from local_databricks.server import LocalJobsApi
    from spark_jobs.settings import Settings

    settings = Settings.from_env()
    landing = Path(settings.landing_root)
    if not (landing / args.run_date.isoformat()).is_dir():
        from spark_jobs.sample_data import generate

        print(f"generating sample exports (scale {args.scale:g}) for {args.run_date} in {landing}", flush=True)
        generate(landing, scale=args.scale, start_date=args.run_date)
    assert settings.lakehouse_root is not None
    job_env = {**os.environ, "LAKEHOUSE_ROOT": str(settings.lakehouse_root), "LAKEHOUSE_LANDING_ROOT": str(landing)}
    api = LocalJobsApi(state_dir=REPO / ".lakehouse" / "jobs-api", token="local-dev-token", workdir=REPO, env=job_env)
    api.start()
    print(f"local Databricks Jobs API on {api.base_url}", flush=True)
    try:
        _setup_env(REPO / ".airflow", {"port": api.port})
        from airflow.dag_processing.dagbag import BundleDagBag
        from airflow.utils import db

        db.initdb()
        bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags", bundle_name="dags-folder")
        if bag.import_errors:
            print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
            return 1
        dag = bag.dags["ecommerce_lakehouse"]
        logical = datetime(args.run_date.year, args.run_date.month, args.run_date.day, 3, tzinfo=UTC)
        run = dag.test(logical_date=logical)
        print(f"\nDAG run {run.run_id}: {run.state}")
        print(f"Databricks-style run pages: {api.base_url}/runs/<run_id> (see the task logs for the ids)")
        print(summary(settings.lakehouse_root, args.run_date))
        return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1
    finally:
        api.stop()


if __name__ == "__main__":
    sys.exit(main())
