from __future__ import annotations

import subprocess
import sys

import pytest

from spark_jobs.engine import supports_delta
from spark_jobs.errors import EngineUnavailableError
from spark_jobs.settings import Engine
from spark_jobs.tables import TableStore


def test_session_has_utc_and_ansi_semantics(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    assert spark.sql("select 7 / 2 as x").collect()[0]["x"] == 3.5


def test_engine_capabilities(spark, engine, settings):
    if engine is Engine.SAIL:
        assert supports_delta(spark)
        assert type(spark).__module__.startswith("pyspark.sql.connect")
    else:
        assert not supports_delta(spark)  # no Delta jars on this machine
        with pytest.raises(EngineUnavailableError, match="LAKEHOUSE_DELTA_JARS"):
            TableStore(spark, settings).read(settings.table("bronze", "crm_cust_info"))


def test_session_conf_is_accepted_by_a_real_spark_connect_server(engine, tmp_path):
    """LAKEHOUSE_ENGINE=connect sets the session conf on a server it did not start: every key must
    be one a Spark Connect server lets a client change (a static conf is refused). Runs in the JVM
    tier, against a local Spark Connect server in its own process."""
    if engine is not Engine.SPARK:
        pytest.skip("needs the JVM (run with --engine spark)")
    script = (
        "from pyspark.sql.utils import is_remote\n"
        "from spark_jobs.engine import SESSION_CONF, _connect_session\n"
        "spark = _connect_session('local[1]', local=False)\n"
        "assert is_remote()\n"
        "assert {k: spark.conf.get(k) for k in SESSION_CONF} == SESSION_CONF\n"
        "print(spark.range(3).count())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("3"), proc.stderr[-3000:]
