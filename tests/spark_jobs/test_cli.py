"""The command line: ``lakehouse`` (the shell wrapper, exit codes) and ``lakehouse_task`` (the
Databricks wheel entry point: returns on success, raises on failure), in-process and installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.cli import UsageError, console, main
from spark_jobs.errors import HeaderMismatchError

pytestmark = pytest.mark.delta


def test_bronze_command_loads_a_batch(capsys, tmp_path, sample_landing, engine):
    code = console(
        [
            "bronze",
            "--run-date",
            "2014-01-30",
            "--engine",
            engine.value,
            "--landing-root",
            str(sample_landing),
            "--lakehouse-root",
            str(tmp_path / "t"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "bronze crm_sales_details:" in out and "0 quarantined" in out
    assert (tmp_path / "t" / "bronze" / "crm_sales_details" / "_delta_log").is_dir()


def _bad_header_batch(tmp_path: Path, engine) -> list[str]:
    folder = tmp_path / "in" / "2024-01-15" / "source_erp"
    folder.mkdir(parents=True)
    (folder / "LOC_A101.csv").write_text("CID,COUNTRY\r\nAW-1,DE\r\n")
    return [
        "bronze",
        "--run-date",
        "2024-01-15",
        "--engine",
        engine.value,
        "--landing-root",
        str(tmp_path / "in"),
        "--lakehouse-root",
        str(tmp_path / "t"),
    ]


def test_header_mismatch_exits_1_with_the_message(capsys, tmp_path, engine):
    code = console(_bad_header_batch(tmp_path, engine))
    assert code == 1
    err = capsys.readouterr().err
    assert "LOC_A101.csv: header does not match table erp_loc_a101" in err
    assert "Traceback" not in err


def test_the_wheel_entry_point_raises_the_named_error_instead_of_returning_a_code(tmp_path, engine):
    """Databricks ignores what a wheel entry point returns: only an exception fails the task."""
    with pytest.raises(HeaderMismatchError, match=r"LOC_A101\.csv: header does not match table erp_loc_a101"):
        main(_bad_header_batch(tmp_path, engine))


def test_the_wheel_entry_point_returns_none_on_success(tmp_path):
    assert main(["generate", "--scale", "0.01", "--start-date", "2024-01-15", "--out", str(tmp_path)]) is None


def test_bad_run_date_is_a_usage_error(capsys):
    assert console(["bronze", "--run-date", "15/01/2024"]) == 2
    err = capsys.readouterr().err
    assert "not a date (YYYY-MM-DD): '15/01/2024'" in err
    assert err.startswith("usage: lakehouse bronze")


def test_a_usage_error_in_the_wheel_entry_point_is_an_exception_not_system_exit():
    with pytest.raises(UsageError, match=r"^lakehouse bronze: error: argument --run-date: not a date"):
        main(["bronze", "--run-date", "15/01/2024"])
    with pytest.raises(UsageError, match="the following arguments are required: --run-date"):
        main(["bronze"])


def test_help_returns_normally(capsys):
    assert main(["--help"]) is None
    assert console(["bronze", "--help"]) == 0
    assert "--run-date" in capsys.readouterr().out


def test_installed_entry_points_are_the_wheel_task_and_the_shell_wrapper():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("lakehouse")}
    assert scripts["lakehouse_task"] == "spark_jobs.cli:main"
    assert scripts["lakehouse"] == "spark_jobs.cli:console"


def test_installed_console_script_generates_and_runs(tmp_path, engine):
    exe = shutil.which("lakehouse", path=str(Path(sys.executable).parent))
    assert exe, "the lakehouse console script is not installed in this environment"
    env = {
        **os.environ,
        "LAKEHOUSE_LANDING_ROOT": str(tmp_path / "in"),
        "LAKEHOUSE_ROOT": str(tmp_path / "t"),
        "LAKEHOUSE_ENGINE": engine.value,
    }
    gen = subprocess.run(
        [exe, "generate", "--scale", "0.01", "--start-date", "2024-01-15"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 1 batches" in gen.stdout
    run = subprocess.run(
        [exe, "run", "--run-date", "2024-01-15", "--from", "bronze", "--to", "bronze"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("bronze ") == 6
    usage = subprocess.run([exe, "bronze", "--run-date", "x"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "not a date" in usage.stderr and "Traceback" not in usage.stderr
