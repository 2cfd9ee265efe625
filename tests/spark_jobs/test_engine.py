from __future__ import annotations

import re
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


def test_fetch_one_brings_the_row_and_the_probes_schemas_in_three_round_trips(spark, engine):
    from pyspark.sql import functions as F

    from spark_jobs.engine import fetch_one, schemas_of

    rows = spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string")
    other = rows.select(F.col("id").cast("decimal(10,2)").alias("amount"), F.array("name").alias("names"))
    query = rows.agg(F.count(F.lit(1)).alias("n"), F.collect_set("name").alias("names"))

    def fetch():
        return fetch_one(query, probes=[other, rows.filter("id > 9")])  # the second has no row

    if engine is Engine.SAIL:
        from bench.roundtrips import counting

        fetch()  # the session's first requests include its own set-up
        with counting() as counts:
            row, schemas = fetch()
        assert counts == {"analyze": 1, "execute": 1, "config": 1}, counts
    else:
        row, schemas = fetch()
    assert row["n"] == 2 and sorted(row["names"]) == ["a", "b"] and set(row) == {"n", "names"}
    assert [s.simpleString() for s in schemas] == [
        "struct<amount:decimal(10,2),names:array<string>>",
        "struct<id:bigint,name:string>",
    ]
    assert [s.simpleString() for s in schemas_of([rows, other])] == [
        rows.schema.simpleString(),
        other.schema.simpleString(),
    ]


@pytest.mark.parametrize(("given", "expected"), [(None, "100"), ("250", "250")], ids=["default", "user's own"])
def test_the_embedded_engines_allocator_purges_freed_memory_after_the_delay_the_engine_sets(given, expected):
    """Sail's allocator (mimalloc) reads MIMALLOC_PURGE_DELAY once, when pysail loads: the embedded
    engine sets it before that, and a value the user set wins. Asked of mimalloc itself (its
    verbose start-up lists its options), in a process of its own."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    env["MIMALLOC_VERBOSE"] = "1"
    if given is not None:
        env["MIMALLOC_PURGE_DELAY"] = given
    script = "import os\nfrom spark_jobs.engine import _sail_address\n_sail_address()\nos._exit(0)\n"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    options = done.stderr + done.stdout
    assert re.search(rf"option 'purge_delay': {expected}\b", options), options[-2000:]


def test_a_small_plan_is_materialized_as_rows_in_the_plan_and_a_larger_one_is_checkpointed(spark, monkeypatch):
    """``materialize(small=True)`` fetches at most INLINE_ROWS + 1 rows in one round trip and, when
    they are all, hands back a DataFrame holding them (a local relation, nullable columns); with
    more, the plan is checkpointed as without ``small``. Both give the plan's rows."""
    from bench.roundtrips import counting, total
    from spark_jobs import engine

    if not engine._is_connect(spark):
        pytest.skip("local relations are made over Spark Connect only")
    plan = spark.sql(
        "SELECT id, CAST(id AS INT) AS n, IF(id = 2, NULL, 'x' || id) AS s, DATE'2024-01-01' + CAST(id AS INT) AS d, "
        "TIMESTAMP'2024-01-01 00:00:00' AS t, CAST(id / 3 AS DECIMAL(10, 2)) AS m, id % 2 = 0 AS b, "
        "named_struct('a b', id, 'c', array(id)) AS `s t` FROM range(5)"  # nested names that need quoting
    )
    expected = sorted(plan.collect())
    with counting() as trips:
        small = engine.materialize(plan, small=True)
    assert total(trips) == 1 and engine.is_local_relation(small)
    assert sorted(small.collect()) == expected
    types = [(f.name, f.dataType.simpleString()) for f in plan.schema.fields]  # nullability aside
    assert [(f.name, f.dataType.simpleString()) for f in small.schema.fields] == types
    assert all(f.nullable for f in small.schema.fields)
    monkeypatch.setattr(engine, "INLINE_ROWS", 4)
    larger = engine.materialize(plan, small=True)
    assert not engine.is_local_relation(larger) and sorted(larger.collect()) == expected
