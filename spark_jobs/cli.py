"""``lakehouse`` command line: thin entry points that parse arguments and call one function.

Three ways in, one ``main``:

- ``lakehouse_task`` (``main``): the Databricks ``python_wheel_task`` entry point (package
  ``ecommerce-lakehouse``, parameters ``["bronze", "--run-date", "{{ ds }}"]``). Databricks calls
  it and ignores what it returns; only an exception fails the task (even ``SystemExit(0)`` does).
  So ``main`` returns ``None`` on success and raises on failure: our named error itself, or a
  ``UsageError`` with argparse's message. It never calls ``sys.exit``.
- ``lakehouse`` (``console``): the shell wrapper for people: ``error: <message>`` and exit code 1
  on our named errors (no traceback), 2 on a usage error, 0 on success.
- ``spark_python_task`` on ``spark_jobs/cli.py`` (``entrypoint``): runs ``main`` on ``sys.argv``;
  an uncaught exception ends the process with a traceback and exit code 1, which fails the task.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from spark_jobs.errors import LakehouseError
from spark_jobs.pipeline import LAYER_JOBS, layers_between
from spark_jobs.settings import Engine, Overrides, Settings
from spark_jobs.target import LAYERS

log = logging.getLogger("lakehouse")

# Our named errors (header/schema mismatch, bad settings, missing tables, failed expectations, lost
# rows) carry messages a person can act on: the shell wrapper prints them without a traceback.
NAMED_ERRORS: tuple[type[Exception], ...] = (
    LakehouseError,
    ValueError,
    FileExistsError,
    LookupError,
)


class UsageError(Exception):
    """A bad command line; the message is argparse's (``lakehouse: error: ...``)."""

    def __init__(self, message: str, *, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _HelpShown(Exception):
    """``--help`` (or ``--version``) printed its text: nothing more to do."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of exiting: inside a wheel task ``SystemExit`` fails
    the task, and its message would not reach ``runs/get-output``. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}", usage=self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        if status == 0:
            raise _HelpShown()
        raise UsageError((message or f"{self.prog}: exit status {status}").strip(), usage=self.format_usage())


def _settings(args: argparse.Namespace) -> Settings:
    """The command line's target first, then the environment; defaults follow what was resolved."""
    return Settings.from_env(
        overrides=Overrides(
            env=args.env,
            catalog=args.catalog,
            schemas={layer: name for layer in LAYERS if (name := getattr(args, f"{layer}_schema"))},
            landing_root=args.landing_root,
            lakehouse_root=args.lakehouse_root,
            engine=args.engine,
        )
    )


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=[e.value for e in Engine], help="override LAKEHOUSE_ENGINE")
    p.add_argument("--env", help="the target: local, or a workspace target such as dev or prod (LAKEHOUSE_ENV)")
    p.add_argument("--catalog", help="Unity Catalog catalog (LAKEHOUSE_CATALOG; default lakehouse_<env>)")
    for layer in LAYERS:
        p.add_argument(f"--{layer}-schema", help=f"schema of the {layer} tables (LAKEHOUSE_SCHEMA_{layer.upper()})")
    p.add_argument(
        "--landing-root", help="where daily exports land (LAKEHOUSE_LANDING_ROOT; default follows the catalog)"
    )
    p.add_argument("--lakehouse-root", help="local tables folder, without a catalog (LAKEHOUSE_ROOT)")


def _redelivery(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-empty-redelivery",
        action="store_true",
        help="bronze: replace a batch that had data with an empty or header-only re-delivered file",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lakehouse", description=__doc__.splitlines()[0])
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


def main(argv: Sequence[str] | None = None) -> None:
    """The Databricks ``python_wheel_task`` entry point: returns on success, raises on failure."""
    try:
        args = build_parser().parse_args(argv)
    except _HelpShown:
        return
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _dispatch(args)
    except NAMED_ERRORS as exc:
        log.error("%s failed: %s", args.command, exc)
        raise


def console(argv: Sequence[str] | None = None) -> int:
    """The ``lakehouse`` shell command: exit code 0, 1 (our named errors) or 2 (usage), no traceback."""
    try:
        main(argv)
    except UsageError as exc:
        print(f"{exc.usage}{exc}", file=sys.stderr)
        return 2
    except NAMED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _dispatch(args: argparse.Namespace) -> None:
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
        return
    from spark_jobs.engine import get_spark

    settings = _settings(args)
    layers = layers_between(args.from_layer, args.to_layer) if args.command == "run" else [args.command]
    spark = get_spark(settings)
    for layer in layers:
        for result in LAYER_JOBS[layer](
            spark, settings, args.run_date, allow_empty_redelivery=args.allow_empty_redelivery
        ):
            print(f"{layer} {result}")


def entrypoint(*_: Any) -> None:  # pragma: no cover - for spark_python_task / python -m
    """No ``sys.exit`` on success: Databricks may count even ``SystemExit(0)`` as a failure."""
    main(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    entrypoint()
