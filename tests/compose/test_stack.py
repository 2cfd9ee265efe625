"""The development stack of docker-compose.yaml, run for real: containers from the Dockerfile,
Airflow driven through the REST API v2 the UI uses, alert emails read from Mailpit's API, Databricks
runs counted in the local Jobs API. Tests run in file order on one stack (see conftest.py)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from spark_jobs.target import LAYERS
from tests.compose.conftest import ARTIFACTS, DAG_ID, NOTES, Stack, timed
from tests.compose.stack import StackError, wait_for

pytestmark = pytest.mark.compose

RUN_TIMEOUT = 900  # waiting only: a DAG run takes 1-3 minutes on a busy 2-core machine
GOLD_TABLES = ("dim_customers", "dim_products", "fact_sales")
SUCCEEDED: dict[str, str] = {}  # batch date → id of a DAG run of it that succeeded


def _rows(table: Path) -> int:
    from deltalake import DeltaTable

    return int(DeltaTable(str(table)).to_pyarrow_dataset().count_rows())


def _bronze_batches(stack: Stack) -> set[str]:
    """Batch dates in bronze, read on the host from the Delta table the containers wrote."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(str(stack.data_dir / "tables" / "bronze" / "crm_sales_details"))
    dates = table.to_pyarrow_table(columns=["_batch_date"]).column("_batch_date")
    return {str(d) for d in pc.unique(dates).to_pylist()}


def _bronze_lines(stack: Stack, table: str, batch: str) -> list[tuple[str, int]]:
    """``(source file, line number)`` of every bronze row of one batch."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    data = DeltaTable(str(stack.data_dir / "tables" / "bronze" / table)).to_pyarrow_table(
        columns=["_source_file", "_line_number", "_batch_date"]
    )
    data = data.filter(pc.equal(pc.cast(data.column("_batch_date"), "string"), batch))
    return list(zip(data.column("_source_file").to_pylist(), data.column("_line_number").to_pylist(), strict=True))


def _run_and_wait(stack: Stack, conf: dict[str, str]) -> dict[str, object]:
    run_id = stack.airflow.trigger(DAG_ID, conf)
    return stack.airflow.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)


def test_every_service_is_up_and_published_on_loopback_only(stack: Stack) -> None:
    assert stack.compose.failed_containers() == []
    ids = stack.compose.run("ps", "-q").stdout.split()
    inspected = json.loads(
        subprocess.run([stack.compose.docker, "inspect", *ids], capture_output=True, check=True).stdout
    )
    published = {
        (c["Name"].lstrip("/"), binding["HostIp"], binding["HostPort"])
        for c in inspected
        for bindings in (c["NetworkSettings"]["Ports"] or {}).values()
        for binding in bindings or []
    }
    assert {port for _, _, port in published} == {str(p) for p in stack.ports.values()}, published
    assert {ip for _, ip, _ in published} == {"127.0.0.1"}, f"published beyond loopback: {published}"


def test_a_run_triggered_with_conf_writes_gold_on_the_host(unpaused: Stack) -> None:
    stack = unpaused
    with timed("triggered run 2014-01-29"):
        run = _run_and_wait(stack, {"batch_date": "2014-01-29"})
    tasks = stack.airflow.task_instances(DAG_ID, str(run["dag_run_id"]))
    assert run["state"] == "success", {k: v["state"] for k, v in tasks.items()}
    assert {k: v["state"] for k, v in tasks.items()} == dict.fromkeys(LAYERS, "success")
    SUCCEEDED["2014-01-29"] = str(run["dag_run_id"])
    for name in GOLD_TABLES:
        assert _rows(stack.data_dir / "tables" / "gold" / name) > 0, name
    assert "2014-01-29" in _bronze_batches(stack)
    # the task's "See Databricks Job Run" link (what the UI shows) opens the run page from the host
    links = stack.airflow.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/gold/links"
    )  # fmt: skip
    url = links["extra_links"]["See Databricks Job Run"]
    assert url.startswith(f"http://localhost:{stack.ports['JOBS_API_PORT']}/runs/"), links
    with urllib.request.urlopen(url.replace("localhost", "127.0.0.1"), timeout=30) as page:
        html = page.read().decode()
    assert "lakehouse-local-gold-2014-01-29" in html and "SUCCESS" in html


def test_a_three_day_backfill_runs_every_day(unpaused: Stack) -> None:
    stack = unpaused
    with timed("backfill 2014-01-30..02-01 (3 runs)"):
        backfill = stack.airflow.api(
            "POST",
            "/backfills",
            {  # the body the UI's "Run backfill" form sends
                "dag_id": DAG_ID,
                "from_date": "2014-01-30T00:00:00Z",
                "to_date": "2014-02-01T12:00:00Z",
                "run_backwards": False,
                "dag_run_conf": {},
                "reprocess_behavior": "none",
                "max_active_runs": 1,
            },
        )

        def done() -> dict[str, object] | None:
            answer = stack.airflow.api("GET", f"/backfills/{backfill['id']}")
            return answer if answer.get("completed_at") else None

        wait_for(f"backfill {backfill['id']} to complete", done, timeout=3 * RUN_TIMEOUT, interval=5)
    runs = stack.airflow.api("GET", f"/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=100")["dag_runs"]
    states = {r["logical_date"][:10]: r["state"] for r in runs}
    assert states == dict.fromkeys(["2014-01-30", "2014-01-31", "2014-02-01"], "success"), states
    assert {"2014-01-30", "2014-01-31", "2014-02-01"} <= _bronze_batches(stack)


def test_a_broken_export_fails_the_batch_and_the_alert_email_reaches_mailpit(unpaused: Stack) -> None:
    stack = unpaused
    # a new delivery whose customer file renamed a column
    stack.compose.exec(
        "local-databricks",
        "python - <<'PY'\n"
        "import pathlib, shutil\n"
        "landing = pathlib.Path('/lakehouse/landing')\n"
        "bad = landing / '2014-02-05'\n"
        "shutil.rmtree(bad, ignore_errors=True)\n"
        "shutil.copytree(landing / '2014-02-01', bad)\n"
        "f = next(p for p in (bad / 'source_crm').iterdir() if p.name.lower() == 'cust_info.csv')\n"
        "header, rest = f.read_text().split('\\n', 1)\n"
        "f.write_text(','.join('customer_id' if c == 'cst_id' else c for c in header.split(',')) + '\\n' + rest)\n"
        "PY",
    )
    with timed("failing run 2014-02-05 + emails"):
        run = _run_and_wait(stack, {"batch_date": "2014-02-05"})
        assert run["state"] == "failed"
        failed = "[lakehouse][local] FAILED bronze 2014-02-05"
        summary = "[lakehouse][local] DAG FAILED ecommerce_lakehouse 2014-02-05"
        wait_for(f"email {failed!r} in Mailpit", lambda: failed in stack.mailpit.subjects() or None, timeout=180)
        wait_for(f"email {summary!r} in Mailpit", lambda: summary in stack.mailpit.subjects() or None, timeout=180)
    text = stack.mailpit.message(failed)["Text"]
    assert "header mismatch" in text and "customer_id" in text, text
    assert f"http://localhost:{stack.ports['JOBS_API_PORT']}/runs/" in text, text  # the Databricks run page
    assert f"http://localhost:{stack.ports['AIRFLOW_PORT']}/" in text, text  # the Airflow run / log
    tasks = stack.airflow.task_instances(DAG_ID, str(run["dag_run_id"]))
    assert tasks["bronze"]["state"] == "failed" and tasks["silver"]["state"] == "upstream_failed"


def test_a_scheduler_restart_during_a_run_neither_loses_nor_duplicates_the_databricks_run(unpaused: Stack) -> None:
    stack = unpaused
    batch = "2014-01-31"
    names = {layer: f"lakehouse-local-{layer}-{batch}" for layer in LAYERS}
    before = {layer: len(stack.jobs_api.runs_named(name)) for layer, name in names.items()}
    with timed("run with scheduler restart"):
        run_id = stack.airflow.trigger(DAG_ID, {"batch_date": batch})

        def bronze_executing() -> bool | None:
            runs = stack.jobs_api.runs_named(names["bronze"])
            active = [r for r in runs if r["state"]["life_cycle_state"] in ("PENDING", "QUEUED", "RUNNING")]
            return (len(runs) > before["bronze"] and bool(active)) or None

        wait_for("the bronze Databricks run to be executing", bronze_executing, timeout=RUN_TIMEOUT, interval=1)
        # 2 s to stop, then SIGKILL: the LocalExecutor waits for running tasks on SIGTERM, so a longer
        # grace would often let the task finish; killed, its heartbeat times out and the retry
        # reconnects to the Databricks run it had submitted
        stack.compose.run("restart", "-t", "2", "airflow-scheduler")
        try:
            run = stack.airflow.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
        except StackError:
            print(stack.compose.run("logs", "--tail=150", "airflow-scheduler").stdout)
            raise
    tasks = stack.airflow.task_instances(DAG_ID, run_id)
    NOTES["tries of the run across the restart"] = str({k: v["try_number"] for k, v in tasks.items()})
    assert run["state"] == "success", {k: (v["state"], v["try_number"]) for k, v in tasks.items()}
    # The restart orphans the running bronze task; Airflow gives it a new try. A new try never reports
    # an earlier try's result (a clear looks the same to it) and never runs next to it: it cancels and
    # waits for an earlier run that is still active, or, when that run finished in the meantime,
    # submits again (lakehouse_airflow.operators). So per layer: runs one after another, never two at
    # once, the last one successful, none failed; and the batch's rows are in bronze once.
    for layer, name in names.items():
        new = sorted(stack.jobs_api.runs_named(name), key=lambda r: r["run_id"])[before[layer] :]
        assert new, (layer, "no Databricks run")
        assert new[-1]["state"].get("result_state") == "SUCCESS", (layer, [r["state"] for r in new])
        for earlier, later in itertools.pairwise(new):
            assert earlier["state"].get("result_state") in ("SUCCESS", "CANCELED"), (layer, earlier["state"])
            assert earlier["end_time"] <= later["start_time"], (layer, "two runs at once", earlier, later)
    NOTES["Databricks runs per layer across the restart"] = str(
        {layer: len(stack.jobs_api.runs_named(name)) - before[layer] for layer, name in names.items()}
    )
    ingested = _bronze_lines(stack, "crm_sales_details", batch)
    assert ingested and len(ingested) == len(set(ingested)), "a landing line was ingested twice"


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless browser: apt-get install chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=30000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180, check=True)


def test_in_a_real_browser_the_grid_shows_the_run_and_links_the_databricks_run(unpaused: Stack) -> None:
    """Headless Chromium opens the UI as a person would (the all-admins login sets the cookie,
    then the task's page in the grid), finds "See Databricks Job Run" and follows its link."""
    stack = unpaused
    if "2014-01-29" not in SUCCEEDED:
        pytest.skip("needs the triggered run of test_a_run_triggered_with_conf_writes_gold_on_the_host")
    run_id = SUCCEEDED["2014-01-29"]
    page = f"/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/gold/details"  # the grid + the task
    url = f"{stack.airflow.base_url}/auth/token/login?next={urllib.parse.quote(page, safe='')}"
    with timed("browser: task page + screenshot"):
        dom = _chromium("--dump-dom", url).stdout
        shot = ARTIFACTS / "airflow-grid.png"
        _chromium("--window-size=1600,1000", f"--screenshot={shot}", url)
    links = re.findall(r'href="(http://localhost:\d+/runs/\d+[^"]*)"[^>]*>See Databricks Job Run<', dom)
    assert links, f"no 'See Databricks Job Run' link in the task's page: {dom[-3000:]}"
    run_page = _chromium("--dump-dom", links[0].replace("localhost", "127.0.0.1")).stdout
    assert "lakehouse-local-gold-2014-01-29" in run_page and "SUCCESS" in run_page
    assert shot.stat().st_size > 10_000
