from __future__ import annotations

import pytest

from spark_jobs.engine import EngineUnavailableError, supports_delta
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
