"""One measurement in its own process (so that peak RSS belongs to it); prints one JSON line."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.roundtrips import counting, total
from spark_jobs.engine import get_spark, supports_delta
from spark_jobs.pipeline import run_layers
from spark_jobs.settings import Settings
from spark_jobs.sources import SOURCES
from spark_jobs.target import LAYERS


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process so far, all threads (the embedded engine and DuckDB run in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _files(landing: Path, day: date) -> list[tuple[str, Path]]:
    out = []
    for name, source in SOURCES.items():
        path = landing / day.isoformat() / source.system / source.file_name
        if path.exists():
            out.append((name, path))
    return out


def floor(spark: Any, landing: Path, day: date, scratch: Path, fmt: str) -> float:
    """Read every CSV of the batch with the engine's CSV reader and write it once."""
    t0 = time.perf_counter()
    for name, path in _files(landing, day):
        df = spark.read.option("header", True).csv(str(path))
        df.write.format(fmt).mode("overwrite").save(str(scratch / name / "1"))
    return time.perf_counter() - t0


def copies(spark: Any, landing: Path, day: date, scratch: Path, fmt: str, n: int) -> float:
    """The floor of an ``n``-layer design: the batch written once (as ``floor``), then read back and
    written again ``n - 1`` times with no transformation at all."""
    t0 = time.perf_counter()
    floor(spark, landing, day, scratch, fmt)
    for name, _ in _files(landing, day):
        for layer in range(2, n + 1):
            df = spark.read.format(fmt).load(str(scratch / name / str(layer - 1)))
            df.write.format(fmt).mode("overwrite").save(str(scratch / name / str(layer)))
    return time.perf_counter() - t0


def _settings(engine: str, landing: Path, tables: Path) -> Settings:
    # report mode: a day processed alone on empty tables has facts without dimensions, which the
    # enforced linkage thresholds would (rightly) refuse; the benchmark measures cost, not quality.
    return Settings.from_env(
        {
            "LAKEHOUSE_ENGINE": engine,
            "LAKEHOUSE_LANDING_ROOT": str(landing),
            "LAKEHOUSE_ROOT": str(tables),
            "LAKEHOUSE_DQ_MODE": "report",
        }
    )


def pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """The last day of ``--days`` on empty tables: one untimed run, then ``--repeat`` timed ones
    (each on fresh tables, with the floors when ``--floor``); the median of each figure."""
    landing, root = Path(args.landing), Path(args.tables)
    measured = date.fromisoformat(args.days.split(",")[-1])
    spark = get_spark(_settings(args.engine, landing, root))
    spark.range(10).count()  # warm-up: session and connection
    if not supports_delta(spark):
        # The jobs write Delta tables and nothing else: no stand-in pipeline is measured instead.
        return {
            "engine": args.engine,
            "skipped": "this Spark session has no Delta Lake (classic Spark needs the delta-spark jars: "
            "LAKEHOUSE_DELTA_JARS); the shipped jobs cannot run on it, so nothing was measured",
        }
    samples: dict[str, list[float]] = {}
    trips: dict[str, int] = {}

    def sample(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)

    for i in range(args.repeat + 1):
        tables, scratch = root / f"run-{i}", root / f"floor-{i}"
        if args.floor:
            sample("floor_s", floor(spark, landing, measured, scratch, "delta"))
            shutil.rmtree(scratch, ignore_errors=True)
            sample("three_copies_s", copies(spark, landing, measured, scratch, "delta", 3))
            shutil.rmtree(scratch, ignore_errors=True)
        settings = _settings(args.engine, landing, tables)
        cpu0 = _cpu_s()
        for layer in LAYERS:
            with counting() as counts:
                t0 = time.perf_counter()
                run_layers(spark, settings, measured, [layer])
                sample(f"{layer}_s", time.perf_counter() - t0)
            trips[layer] = total(counts)  # the same in every run: the plans do not depend on timing
        sample("total_cpu_s", _cpu_s() - cpu0)
        shutil.rmtree(tables, ignore_errors=True)
        if i == 0:  # warm-up run, not counted
            samples.clear()
    layers = zip(samples["bronze_s"], samples["silver_s"], samples["gold_s"], strict=True)
    samples["total_s"] = [sum(run) for run in layers]
    result: dict[str, Any] = {"engine": args.engine, "day": measured.isoformat(), "runs": args.repeat}
    result.update({name: statistics.median(values) for name, values in samples.items()})
    result["samples"] = samples
    result["round_trips"] = {**trips, "total": sum(trips.values())}
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def first_load(args: argparse.Namespace) -> dict[str, Any]:
    """One first load of the last day of ``--days``, in a process of its own, as ``lakehouse run``
    makes it: the peak RSS of a user's run (the ``pipeline`` worker's is over all its runs and
    the floors in one process, whose memory the engine's allocator does not all give back between
    them)."""
    landing, root = Path(args.landing), Path(args.tables)
    measured = date.fromisoformat(args.days.split(",")[-1])
    settings = _settings(args.engine, landing, root / "run")
    t0 = time.perf_counter()
    run_layers(get_spark(settings), settings, measured)
    return {"engine": args.engine, "day": measured.isoformat(), "total_s": time.perf_counter() - t0,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def _history(args: argparse.Namespace) -> tuple[Any, Path, date]:
    """Every day of ``--days`` but the last loaded (not timed) into ``<tables>/history``: the
    session, that history and the day to measure on top of it."""
    landing, root = Path(args.landing), Path(args.tables)
    days = [date.fromisoformat(d) for d in args.days.split(",")]
    history = root / "history"
    spark = get_spark(_settings(args.engine, landing, history))
    spark.range(10).count()
    for day in days[:-1]:
        run_layers(spark, _settings(args.engine, landing, history), day)
    return spark, history, days[-1]


def incremental(args: argparse.Namespace) -> dict[str, Any]:
    """The last day on top of the earlier days vs the same day on empty tables, ``--repeat`` times each.

    The history is built once (not timed) and copied before each on-top run, so every run starts
    from the same tables. One untimed run of each kind first, then the two kinds alternate in the
    same warm process: both sides pay the same session and first-query costs, and the noise of this
    machine hits both alike. The medians are compared.
    """
    landing, root = Path(args.landing), Path(args.tables)
    spark, history, measured = _history(args)

    trips: dict[str, dict[str, int]] = {}

    def run(kind: str, i: int) -> float:
        tables = root / f"{kind}-{i}"
        if kind == "on_top":
            shutil.copytree(history, tables)
        settings = _settings(args.engine, landing, tables)
        t0 = time.perf_counter()
        per_layer = {}
        for layer in LAYERS:
            with counting() as counts:
                run_layers(spark, settings, measured, [layer])
            per_layer[layer] = total(counts)
        elapsed = time.perf_counter() - t0
        trips[kind] = {**per_layer, "total": sum(per_layer.values())}
        shutil.rmtree(tables)
        return elapsed

    samples: dict[str, list[float]] = {"on_top": [], "alone": []}
    for i in range(args.repeat + 1):
        for kind in ("on_top", "alone"):
            elapsed = run(kind, i)
            if i:  # the first of each kind warms up
                samples[kind].append(elapsed)
    on_top, alone = statistics.median(samples["on_top"]), statistics.median(samples["alone"])
    return {
        "engine": args.engine,
        "day": measured.isoformat(),
        "setup_days": len(args.days.split(",")) - 1,
        "on_top_s": on_top,
        "alone_s": alone,
        "ratio": on_top / alone,
        "samples": samples,
        "round_trips": trips,
    }


def history(args: argparse.Namespace) -> dict[str, Any]:
    """Every day of ``--days`` in order on the same tables, in one warm process, as a scheduler runs
    them: the wall time and round trips of each day, to see whether a daily run stays flat as
    history grows (``--repeat`` is not used: each day is one sample)."""
    landing, root = Path(args.landing), Path(args.tables)
    days = [date.fromisoformat(d) for d in args.days.split(",")]
    settings = _settings(args.engine, landing, root / "long")
    spark = get_spark(settings)
    spark.range(10).count()
    seconds: list[float] = []
    trips: list[int] = []
    for day in days:
        with counting() as counts:
            t0 = time.perf_counter()
            run_layers(spark, settings, day)
            seconds.append(time.perf_counter() - t0)
        trips.append(total(counts))
    return {"engine": args.engine, "days": [d.isoformat() for d in days], "seconds": seconds, "round_trips": trips,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def duckdb_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The DuckDB reference (``bench/duckdb_reference.py``) on the last day of ``--days``: one untimed
    run, then ``--repeat`` timed ones, each writing fresh Delta tables; medians of wall and CPU."""
    from bench.duckdb_reference import run_reference

    landing, root = Path(args.landing), Path(args.tables)
    day = date.fromisoformat(args.days.split(",")[-1])
    samples: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    for i in range(args.repeat + 1):
        out = root / f"run-{i}"
        cpu0 = _cpu_s()
        result = run_reference(landing, day, out)
        cpu = _cpu_s() - cpu0
        shutil.rmtree(out, ignore_errors=True)
        rows = result["rows"]
        if i == 0:  # warm-up run, not counted
            continue
        for name in ("bronze_s", "silver_s", "gold_s", "total_s"):
            samples.setdefault(name, []).append(result[name])
        samples.setdefault("total_cpu_s", []).append(cpu)
    out_result: dict[str, Any] = {"engine": "duckdb", "day": day.isoformat(), "runs": args.repeat}
    out_result.update({name: statistics.median(values) for name, values in samples.items()})
    out_result["samples"] = samples
    out_result["rows"] = rows
    out_result["peak_rss_mb"] = _peak_rss_mb()
    return out_result


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """One daily run (the last day on top of the earlier ones) under pyinstrument, with the round
    trips per layer and per call site in ``spark_jobs``. The history is built first (not profiled)
    and the day is run once on a copy of it unprofiled, so that the profile is of a warm daily run,
    the one ``incremental`` times."""
    from pyinstrument import Profiler

    from bench.roundtrips import call_sites

    landing, root = Path(args.landing), Path(args.tables)
    spark, history, measured = _history(args)
    warm = root / "warm"
    shutil.copytree(history, warm)
    run_layers(spark, _settings(args.engine, landing, warm), measured)
    shutil.rmtree(warm)

    tables = root / "profiled"
    shutil.copytree(history, tables)
    settings = _settings(args.engine, landing, tables)
    per_layer: dict[str, dict[str, int]] = {}
    sites: dict[str, int] = {}
    seconds: dict[str, float] = {}
    profiler = Profiler(interval=0.001)
    cpu0 = _cpu_s()
    profiler.start()
    for layer in LAYERS:
        t0 = time.perf_counter()
        with counting() as counts, call_sites() as layer_sites:
            run_layers(spark, settings, measured, [layer])
        seconds[f"{layer}_s"] = time.perf_counter() - t0
        per_layer[layer] = {**counts, "total": total(counts)}
        for site, n in layer_sites.items():
            sites[site] = sites.get(site, 0) + n
    profiler.stop()
    cpu = _cpu_s() - cpu0
    shutil.rmtree(tables)
    prefix = Path(args.profile_out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    Path(f"{prefix}.html").write_text(profiler.output_html())
    return {
        "engine": args.engine,
        "day": measured.isoformat(),
        "setup_days": len(args.days.split(",")) - 1,
        **seconds,
        "total_s": sum(seconds.values()),
        "total_cpu_s": cpu,
        "round_trips": {**per_layer, "total": sum(t["total"] for t in per_layer.values())},
        "call_sites": dict(sorted(sites.items(), key=lambda kv: -kv[1])),
        "report": [f"{prefix}.txt", f"{prefix}.html"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pipeline", "first_load", "incremental", "history", "duckdb", "profile"])
    p.add_argument("--engine", default="sail")
    p.add_argument("--landing", required=True)
    p.add_argument("--tables", required=True)
    p.add_argument("--days", required=True, help="comma-separated batch dates; the last one is measured")
    p.add_argument("--floor", action="store_true")
    p.add_argument("--repeat", type=int, default=5, help="timed runs (after an untimed one); medians reported")
    p.add_argument("--profile-out", help="profile mode: path prefix of the .txt/.html reports")
    args = p.parse_args()
    modes = {
        "pipeline": pipeline,
        "first_load": first_load,
        "incremental": incremental,
        "history": history,
        "duckdb": duckdb_reference,
        "profile": profile,
    }
    result = modes[args.mode](args)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
