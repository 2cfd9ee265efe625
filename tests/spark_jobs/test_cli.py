"""The ``lakehouse`` console script, in-process and as the installed executable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.cli import main

pytestmark = pytest.mark.delta


def test_bronze_command_loads_a_batch(capsys, tmp_path, sample_landing, engine):
    code = main(
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


def test_header_mismatch_exits_1_with_the_message(capsys, tmp_path, engine):
    folder = tmp_path / "in" / "2024-01-15" / "source_erp"
    folder.mkdir(parents=True)
    (folder / "LOC_A101.csv").write_text("CID,COUNTRY\r\nAW-1,DE\r\n")
    code = main(
        [
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
    )
    assert code == 1
    assert "LOC_A101.csv: header does not match table erp_loc_a101" in capsys.readouterr().err


def test_bad_run_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["bronze", "--run-date", "15/01/2024"])
    assert excinfo.value.code == 2
    assert "not a date (YYYY-MM-DD): '15/01/2024'" in capsys.readouterr().err


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
