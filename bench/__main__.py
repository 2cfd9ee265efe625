"""``make bench``: time the pipeline on generated data and print a table (no assertions).

Figures, each measured in its own process on this machine in one run, as medians of ``--repeat``
timed runs after an untimed one (this VM is noisy):
* per scale factor: raw rows, floor (read the batch's CSVs and write them once as Delta, same
  engine), the floor of any three-layer design (that copy, then read and written twice more with no
  transformation), bronze / silver / gold / total seconds, total ÷ floor, total ÷ three copies,
  Spark Connect round trips (``bench/roundtrips.py``; per layer in the JSON), rows/s, peak RSS of
  one first load in a process of its own (as ``lakehouse run`` makes it: ``peak_rss_mb`` in the
  summary) and of the timing worker over all its runs and floors (``peak_rss_all_runs_mb``);
* per scale factor, paired in the same run: the DuckDB reference (``bench/duckdb_reference.py``:
  the same bronze, silver and gold rules in DuckDB SQL, Delta written with ``deltalake``), its wall,
  CPU and peak RSS, and ``pipeline / DuckDB``. Both sides are in-process timings of the three
  layers (warm session / fresh connection, medians), not the whole-process wall of ``lakehouse run``
  (which adds ~2 s of interpreter, imports and session start on the pipeline side);
* incremental: one new day on top of 30 days of history vs the same day on empty tables
  (alternating runs in one warm process), and the round trips of each;
* long history: ``--long-days`` (120) days run in order on the same tables in one process, as the
  scheduler runs them: the median daily wall of days 26-30 vs days 116-120 (flat or not);
* engines: the shipped jobs (bronze, silver, gold on Delta) at SF1 on classic JVM Spark vs Sail.
  Classic Spark needs the delta-spark jars (``LAKEHOUSE_DELTA_JARS``); without them, as on these
  machines (no Maven Central), the comparison says so and measures nothing: no stand-in pipeline.
Results also go to ``.bench/results/<timestamp>.json``.

``--profile`` instead profiles one daily run (SF1, the last of ``--incremental-days`` days on top of
the others) with pyinstrument and counts its round trips per call site:
``.bench/results/profile-<timestamp>.txt/.html/.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from spark_jobs.sample_data import DEFAULT_START_DATE, generate
from spark_jobs.settings import REPO_ROOT
from spark_jobs.target import LAYERS

BENCH = REPO_ROOT / ".bench"


def _data(scale: float, days: int, seed: int) -> Path:
    root = BENCH / "data" / f"sf{scale:g}-days{days}-seed{seed}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        generate(root, scale=scale, start_date=DEFAULT_START_DATE, days=days, seed=seed)
        (root / ".complete").write_text("")
        print(f"  generated SF{scale:g} (+{days} days) in {time.perf_counter() - t0:.1f}s: {root}", flush=True)
    return root


def _raw_rows(landing: Path, day: date) -> int:
    total = 0
    for path in (landing / day.isoformat()).rglob("*.csv"):
        with path.open("rb") as fh:
            total += max(0, sum(1 for line in fh if line.strip()) - 1)
    return total


def _worker(
    mode: str,
    *,
    engine: str,
    landing: Path,
    days: list[date],
    floor: bool = False,
    repeat: int | None = None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    tables = BENCH / "tables" / f"{mode}-{engine}-{landing.name}-{len(days)}"
    shutil.rmtree(tables, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.worker", mode, "--engine", engine, "--landing", str(landing),
           "--tables", str(tables), "--days", ",".join(d.isoformat() for d in days)]  # fmt: skip
    if floor:
        cmd.append("--floor")
    if repeat is not None:
        cmd += ["--repeat", str(repeat)]
    cmd += extra or []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
    shutil.rmtree(tables, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,10", help="comma-separated scale factors (default 1,10)")
    p.add_argument("--sf100", action="store_true", help="add scale factor 100 (long: ~6M sales lines)")
    p.add_argument("--incremental-days", type=int, default=30)
    p.add_argument(
        "--repeat", type=int, default=5, help="timed runs of each measurement after an untimed one (medians reported)"
    )
    p.add_argument("--skip-jvm", action="store_true", help="skip the classic JVM Spark comparison")
    p.add_argument("--long-days", type=int, default=120, help="days of the long-history run (0 skips it)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--profile", action="store_true", help="only profile one daily run (pyinstrument + round trips)")
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.profile:
        _profile(args)
        return
    scales = [float(s) for s in args.scales.split(",")] + ([100.0] if args.sf100 else [])
    day0 = DEFAULT_START_DATE
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(), "scales": []}

    print(f"Full pipeline on one history batch (embedded Sail, Delta; medians of {args.repeat} runs):", flush=True)
    for scale in scales:
        landing = _data(scale, 0, args.seed)
        r = _worker("pipeline", engine="sail", landing=landing, days=[day0], floor=True, repeat=args.repeat)
        r.update(scale=scale, raw_rows=_raw_rows(landing, day0))
        r["total_over_floor"] = r["total_s"] / r["floor_s"]
        r["three_copies_over_floor"] = r["three_copies_s"] / r["floor_s"]
        r["total_over_three_copies"] = r["total_s"] / r["three_copies_s"]
        r["rows_per_s"] = r["raw_rows"] / r["total_s"]
        duck = _worker("duckdb", engine="duckdb", landing=landing, days=[day0], repeat=args.repeat)
        r["duckdb"] = duck
        r["vs_duckdb"] = r["total_s"] / duck["total_s"]
        r["vs_duckdb_cpu"] = r["total_cpu_s"] / duck["total_cpu_s"]
        r["first_load"] = _worker("first_load", engine="sail", landing=landing, days=[day0])
        report["scales"].append(r)
    columns = [  # (header, width, format of the value)
        ("SF", 5, lambda r: f"{r['scale']:g}"),
        ("raw rows", 10, lambda r: f"{r['raw_rows']}"),
        ("floor s", 8, lambda r: f"{r['floor_s']:.2f}"),
        ("3 copies s", 10, lambda r: f"{r['three_copies_s']:.2f}"),
        ("bronze s", 9, lambda r: f"{r['bronze_s']:.2f}"),
        ("silver s", 9, lambda r: f"{r['silver_s']:.2f}"),
        ("gold s", 7, lambda r: f"{r['gold_s']:.2f}"),
        ("total s", 8, lambda r: f"{r['total_s']:.2f}"),
        ("tot/floor", 9, lambda r: f"{r['total_over_floor']:.2f}"),
        ("3cp/floor", 9, lambda r: f"{r['three_copies_over_floor']:.2f}"),
        ("tot/3cp", 7, lambda r: f"{r['total_over_three_copies']:.2f}"),
        ("trips", 5, lambda r: f"{r['round_trips']['total']}"),
        ("rows/s", 9, lambda r: f"{r['rows_per_s']:.0f}"),
        ("peak MB", 8, lambda r: f"{r['first_load']['peak_rss_mb']:.0f}"),
        ("MB all runs", 11, lambda r: f"{r['peak_rss_mb']:.0f}"),
        ("duck s", 7, lambda r: f"{r['duckdb']['total_s']:.2f}"),
        ("vs duck", 7, lambda r: f"{r['vs_duckdb']:.2f}"),
    ]
    print(" ".join(f"{name:>{width}}" for name, width, _ in columns))
    for r in report["scales"]:
        print(" ".join(f"{value(r):>{width}}" for _, width, value in columns))
    print("\nFirst load vs the DuckDB reference (same rules and files; in-process bronze+silver+gold, medians):")
    for r in report["scales"]:
        d = r["duckdb"]
        print(
            f"  SF{r['scale']:g}: pipeline {r['total_s']:.2f}s wall, {r['total_cpu_s']:.2f}s CPU, "
            f"{r['peak_rss_mb']:.0f} MB   DuckDB {d['total_s']:.2f}s wall (bronze {d['bronze_s']:.2f}, silver "
            f"{d['silver_s']:.2f}, gold {d['gold_s']:.2f}), {d['total_cpu_s']:.2f}s CPU, {d['peak_rss_mb']:.0f} MB   "
            f"pipeline/DuckDB: {r['vs_duckdb']:.2f}x wall, {r['vs_duckdb_cpu']:.2f}x CPU"
            + ("   (target at SF10: <= 2.5x wall)" if r["scale"] == 10 else "")
        )
    n = args.incremental_days
    landing = _data(1, n, args.seed)
    days = [day0 + timedelta(days=i) for i in range(n + 1)]
    print(f"\nIncremental (SF1): day {days[-1]} after the history batch and {n - 1} daily ones, vs alone "
          f"(medians of {args.repeat} alternating runs):", flush=True)  # fmt: skip
    inc = _worker("incremental", engine="sail", landing=landing, days=days, repeat=args.repeat)
    report["incremental"] = inc
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in inc["samples"].items()}
    print(f"  on top of history: {inc['on_top_s']:.2f}s ({spread['on_top']})   alone: {inc['alone_s']:.2f}s "
          f"({spread['alone']})   ratio: {inc['ratio']:.2f}")  # fmt: skip
    for kind, trips in inc["round_trips"].items():
        print(f"  Spark Connect round trips, {kind.replace('_', ' ')}: {trips['total']} "
              f"(bronze {trips['bronze']}, silver {trips['silver']}, gold {trips['gold']})")  # fmt: skip

    day30_vs_last = None
    if args.long_days >= 35:
        n_long = args.long_days
        landing = _data(1, n_long - 1, args.seed)
        long_days = [day0 + timedelta(days=i) for i in range(n_long)]
        print(f"\nLong history (SF1): {n_long} days in order on the same tables, one process:", flush=True)
        hist = _worker("history", engine="sail", landing=landing, days=long_days)
        secs = hist["seconds"]
        early, late = statistics.median(secs[25:30]), statistics.median(secs[-5:])
        day30_vs_last = late / early
        report["long_history"] = {**hist, "day30_s": early, "last_s": late, "ratio": day30_vs_last}
        print(f"  day 30 (median of days 26-30): {early:.2f}s   day {n_long} (median of the last 5): {late:.2f}s   "
              f"ratio {day30_vs_last:.2f}   round trips day 30: {hist['round_trips'][29]}, day {n_long}: "
              f"{hist['round_trips'][-1]}   peak RSS {hist['peak_rss_mb']:.0f} MB")  # fmt: skip

    sail_vs_jvm = None
    if not args.skip_jvm:
        landing = _data(1, 0, args.seed)
        print("\nEngines (SF1, the shipped jobs on Delta, first load; medians):", flush=True)
        sail = next((r for r in report["scales"] if r["scale"] == 1), None)
        if sail is None:
            sail = _worker("pipeline", engine="sail", landing=landing, days=[day0], repeat=args.repeat)
        jvm = _worker("pipeline", engine="spark", landing=landing, days=[day0], repeat=args.repeat)
        report["engines"] = {"sail": sail, "jvm": jvm}
        if "skipped" in jvm:
            print(f"  classic Spark local[*]: not measured: {jvm['skipped']}")
        else:
            sail_vs_jvm = jvm["total_s"] / sail["total_s"]
            report["engines"]["jvm_over_sail"] = sail_vs_jvm
            print(
                f"  Sail: {sail['total_s']:.2f}s ({sail['peak_rss_mb']:.0f} MB)   classic Spark local[*]: "
                f"{jvm['total_s']:.2f}s (Python driver {jvm['peak_rss_mb']:.0f} MB; the JVM is a child process)   "
                f"JVM/Sail: {sail_vs_jvm:.1f}x"
            )  # fmt: skip

    out = BENCH / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {path}")
    sf1 = next((r for r in report["scales"] if r["scale"] == 1), report["scales"][0])
    sf10 = next((r for r in report["scales"] if r["scale"] == 10), None)
    first_load = (sf10 or sf1)["round_trips"]
    print("round trips, first load (bronze/silver/gold): " + "/".join(str(first_load[layer]) for layer in LAYERS))
    print(
        f"bench: total/3copies={sf1['total_over_three_copies']:.2f} total/floor={sf1['total_over_floor']:.2f} "
        f"incremental={report['incremental']['ratio']:.2f} "
        f"vs_duckdb={(sf10 or sf1)['vs_duckdb']:.2f} "
        f"round_trips_first_load={first_load['total']} "
        f"round_trips_daily={report['incremental']['round_trips']['on_top']['total']} "
        f"sf10_total_s={sf10['total_s'] if sf10 else float('nan'):.2f} "
        f"day_last_vs_day30={day30_vs_last if day30_vs_last is not None else float('nan'):.2f} "
        f"sail_vs_jvm={sail_vs_jvm if sail_vs_jvm is not None else float('nan'):.2f} "
        f"peak_rss_mb={max(r['first_load']['peak_rss_mb'] for r in report['scales']):.0f} "
        f"peak_rss_all_runs_mb={max(r['peak_rss_mb'] for r in report['scales']):.0f}"
    )


def _profile(args: argparse.Namespace) -> None:
    n = args.incremental_days
    landing = _data(1, n, args.seed)
    days = [DEFAULT_START_DATE + timedelta(days=i) for i in range(n + 1)]
    out = BENCH / "results"
    prefix = out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"Profiling one daily run (SF1, day {days[-1]} on top of the history batch and {n - 1} daily ones, "
          "warm session):", flush=True)  # fmt: skip
    r = _worker("profile", engine="sail", landing=landing, days=days, extra=["--profile-out", str(prefix)])
    Path(f"{prefix}.json").write_text(json.dumps(r, indent=2))
    trips = r["round_trips"]
    print(f"  {r['total_s']:.2f}s wall (bronze {r['bronze_s']:.2f}, silver {r['silver_s']:.2f}, gold "
          f"{r['gold_s']:.2f}), {r['total_cpu_s']:.2f}s CPU; round trips {trips['total']} (bronze "
          f"{trips['bronze']['total']}, silver {trips['silver']['total']}, gold {trips['gold']['total']})")  # fmt: skip
    print("  round trips by call site (top 15):")
    for site, count in list(r["call_sites"].items())[:15]:
        print(f"    {count:3d}  {site}")
    print(f"  profile: {prefix}.txt, {prefix}.html; figures: {prefix}.json")


if __name__ == "__main__":
    main()
