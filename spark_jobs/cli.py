"""``lakehouse`` console script: thin entry points that parse arguments and call one function.

Usable locally, as a Databricks ``python_wheel_task`` (package ``ecommerce-lakehouse``, entry point
``lakehouse``, parameters ``["bronze", "--run-date", "{{ ds }}"]``) or via ``spark_python_task``
pointing at ``spark_jobs/cli.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from spark_jobs.dq import DataQualityError
from spark_jobs.pipeline import LAYER_JOBS, layers_between
from spark_jobs.settings import Engine, Settings, SettingsError
from spark_jobs.silver.job import ConservationError

log = logging.getLogger("lakehouse")


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    return settings.with_overrides(
        engine=Engine(args.engine) if args.engine else None,
        landing_root=args.landing_root,
        lakehouse_root=Path(args.lakehouse_root).resolve() if args.lakehouse_root else None,
        catalog=args.catalog,
    )


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=[e.value for e in Engine], help="override LAKEHOUSE_ENGINE")
    p.add_argument("--landing-root", help="override LAKEHOUSE_LANDING_ROOT")
    p.add_argument("--lakehouse-root", help="override LAKEHOUSE_ROOT (local tables)")
    p.add_argument("--catalog", help="override LAKEHOUSE_CATALOG (Unity Catalog)")


def _redelivery(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-empty-redelivery",
        action="store_true",
        help="bronze: replace a batch that had data with an empty or header-only re-delivered file",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for layer in LAYER_JOBS:
        p = sub.add_parser(layer, help=f"load the {layer} layer for one batch date")
        p.add_argument("--run-date", type=_date, required=True, help="batch date YYYY-MM-DD")
        _common(p)
        _redelivery(p)
    p = sub.add_parser("run", help="run several layers in order for one batch date")
    p.add_argument("--run-date", type=_date, required=True)
    p.add_argument("--from", dest="from_layer", choices=list(LAYER_JOBS), default="bronze")
    p.add_argument("--to", dest="to_layer", choices=list(LAYER_JOBS), default=list(LAYER_JOBS)[-1])
    _common(p)
    _redelivery(p)
    p = sub.add_parser("generate", help="write deterministic sample CRM/ERP exports to the landing zone")
    p.add_argument("--scale", type=float, default=1.0, help="scale factor (1 ≈ 60k sales lines)")
    p.add_argument("--start-date", type=_date, default=None, help="batch date of the history delivery")
    p.add_argument("--days", type=int, default=0, help="daily increments after the history batch")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", help="landing root to write to (default: LAKEHOUSE_LANDING_ROOT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except (SettingsError, ValueError, FileExistsError, LookupError, DataQualityError, ConservationError) as exc:
        # Our named errors (header/schema mismatch, bad settings, missing tables, failed expectations,
        # lost rows) carry actionable messages: print them without a traceback.
        log.error("%s failed: %s", args.command, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "generate":
        from spark_jobs.sample_data import DEFAULT_START_DATE, generate

        out = args.out or Settings.from_env().landing_root
        written = generate(
            Path(out),
            scale=args.scale,
            start_date=args.start_date or DEFAULT_START_DATE,
            days=args.days,
            seed=args.seed,
        )
        print(f"wrote {len(written)} batches to {out}: {', '.join(d.isoformat() for d in written)}")
        return 0
    from spark_jobs.engine import get_spark

    settings = _settings(args)
    layers = layers_between(args.from_layer, args.to_layer) if args.command == "run" else [args.command]
    spark = get_spark(settings)
    for layer in layers:
        for result in LAYER_JOBS[layer](
            spark, settings, args.run_date, allow_empty_redelivery=args.allow_empty_redelivery
        ):
            print(f"{layer} {result}")
    return 0


def entrypoint(*_: Any) -> None:  # pragma: no cover - for spark_python_task / python -m
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entrypoint()
