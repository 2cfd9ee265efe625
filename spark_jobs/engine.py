"""The one place that builds (or finds) the SparkSession for the current environment.

* Databricks: the active session, never a new one.
* Sail (local default): an embedded LakeSail Spark Connect server started in-process on a random
  loopback port, with a Spark Connect client session: real Delta, ~1 s start, no JVM.
* Spark: classic JVM ``local[*]``; Delta only when ``LAKEHOUSE_DELTA_JARS`` names a folder with
  the delta-spark jars, or is ``maven`` on a machine that reaches Maven Central; otherwise Delta
  I/O fails with a clear message.
* Connect: any Spark Connect server at ``SPARK_REMOTE``.

Jobs use only what runs on Spark Connect: the DataFrame API and Spark SQL.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructType

from spark_jobs.errors import EngineUnavailableError, SettingsError
from spark_jobs.settings import Engine, Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Same semantics on every engine: UTC, ANSI arithmetic, few shuffle partitions for laptop data.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
}
LOCAL_CONF = {
    "spark.sql.shuffle.partitions": "4",
    # PySpark otherwise records the caller's file and line for every DataFrame call, trying
    # `import IPython` (a search of sys.path) each time: ~15 % of a small batch's run time. A static
    # conf: a remote Spark Connect server refuses to change it, so it is set on the engines this
    # process starts (embedded Sail, classic local Spark) only.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}

_lock = threading.Lock()
_sail_server: Any = None


def get_spark(settings: Settings) -> SparkSession:
    """Return the SparkSession for ``settings.engine`` (created once per process)."""
    if settings.engine is Engine.DATABRICKS:
        return _databricks_session()
    if settings.engine is Engine.SAIL:
        return _connect_session(_sail_address(), local=True)
    if settings.engine is Engine.CONNECT:
        if not settings.spark_remote:
            raise SettingsError("LAKEHOUSE_ENGINE=connect needs SPARK_REMOTE (e.g. sc://host:15002)")
        return _connect_session(settings.spark_remote, local=False)
    return _classic_session(settings)


# A plan expected to be small (a daily batch's rows) is materialized as rows in the plan itself when
# it has at most this many: see ``materialize``.
INLINE_ROWS = 10_000
# ... and at most this many bytes: a local relation is sent again in every request whose plan uses
# it (over the network on Databricks serverless).
INLINE_BYTES = 4 * 1024 * 1024


def materialize(df: DataFrame, *, small: bool = False) -> DataFrame:
    """Compute ``df`` once and return a DataFrame over the result, for plans used several times.

    Neither Sail nor Spark Connect caches (``persist`` is a no-op on Sail), so without this every
    action recomputes the whole plan from the source files. Engines that refuse
    ``localCheckpoint`` (some serverless runtimes) fall back to recomputing.

    ``small``: the caller expects few rows (a daily batch's): over Spark Connect they are fetched
    as Arrow (at most :data:`INLINE_ROWS` + 1 of them) and, if there are no more than
    :data:`INLINE_ROWS` in :data:`INLINE_BYTES`, sent back inside the plans that use them (a local
    relation), in the same one round trip. On Sail a ``localCheckpoint`` of a plan that joins a
    batch to a stored table costs ~3.5x fetching its rows (50 rows of a 63k-row table: 31 ms vs
    8 ms). With more rows the limited fetch was wasted and the result is checkpointed as usual.
    Columns of a local relation are all nullable (its schema is not asked of the engine: a round
    trip).
    """
    if small and _is_connect(df.sparkSession):
        rows = fetch_arrow(df.limit(INLINE_ROWS + 1))
        if rows.num_rows <= INLINE_ROWS and rows.nbytes <= INLINE_BYTES:
            return _local_relation(df.sparkSession, rows)
    try:
        return df.localCheckpoint(eager=True)
    except Exception as exc:
        log.debug("localCheckpoint unavailable (%s); the plan will be recomputed", exc)
        return df


def is_local_relation(df: DataFrame) -> bool:
    """Whether ``df`` is rows held in its plan (a small ``materialize``)."""
    from pyspark.sql.connect.plan import LocalRelation

    return isinstance(getattr(df, "_plan", None), LocalRelation)


def local_rows(df: DataFrame) -> int | None:
    """How many rows ``df`` holds in its plan, if it is a local relation (a small ``materialize``);
    None for any other plan (nothing is asked of the engine)."""
    from pyspark.sql.connect.plan import LocalRelation

    plan = getattr(df, "_plan", None)
    if isinstance(plan, LocalRelation) and plan._table is not None:
        return int(plan._table.num_rows)
    return None


def empty_frame(spark: SparkSession, schema: StructType) -> DataFrame:
    """No rows of ``schema``, held in the plan (a local relation: nothing is asked of the engine)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return _local_relation(spark, to_arrow_schema(schema, timezone="UTC").empty_table())


def _local_relation(spark: SparkSession, rows: pa.Table) -> DataFrame:
    """A DataFrame of ``rows`` held in its plan, made without the settings round trip of
    ``createDataFrame`` (which converts Python data: these rows came from the engine as Arrow)."""
    import pyarrow as pa
    from pyspark.sql.connect.dataframe import DataFrame as ConnectDataFrame
    from pyspark.sql.connect.plan import LocalRelation
    from pyspark.sql.pandas.types import from_arrow_schema

    nullable = pa.schema([field.with_nullable(True) for field in rows.schema])
    # As DDL: a JSON schema would give each column an empty metadata map, which Sail writes into
    # the Delta schema of a table made from these rows.
    spark_schema = from_arrow_schema(nullable, prefer_timestamp_ntz=True)  # the default differs across 4.x
    ddl = ", ".join(f"{_quoted(f.name)} {_ddl_type(f.dataType)}" for f in spark_schema.fields)
    relation = LocalRelation(rows.cast(nullable), schema=ddl)
    return ConnectDataFrame(relation, spark)  # type: ignore[arg-type]


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ddl_type(data_type: DataType) -> str:
    """``data_type`` as DDL, with the names of nested fields quoted (``simpleString`` leaves them bare)."""
    if isinstance(data_type, StructType):
        return "struct<" + ",".join(f"{_quoted(f.name)}:{_ddl_type(f.dataType)}" for f in data_type.fields) + ">"
    if isinstance(data_type, ArrayType):
        return f"array<{_ddl_type(data_type.elementType)}>"
    if isinstance(data_type, MapType):
        return f"map<{_ddl_type(data_type.keyType)},{_ddl_type(data_type.valueType)}>"
    return data_type.simpleString()


def schemas_of(dfs: Sequence[DataFrame]) -> list[StructType]:
    """The schemas of ``dfs`` in ONE round trip (asking each plan for its own is one per plan): the
    plans are analysed together, each as one struct column of a cross join that is never run."""
    if not dfs:
        return []
    wrapped = [df.select(F.struct("*").alias(f"_p{i}")) for i, df in enumerate(dfs)]
    probe = functools.reduce(lambda a, b: a.crossJoin(b), wrapped)
    schemas = []
    for field in probe.schema.fields:
        assert isinstance(field.dataType, StructType)
        schemas.append(field.dataType)
    return schemas


def fetch_one(query: DataFrame, *, probes: Sequence[DataFrame] = ()) -> tuple[dict[str, Any], list[StructType]]:
    """The values of the one-row ``query`` and the schemas of the ``probes`` (plans that are not
    run, e.g. the DataFrames a job is about to write), in three round trips whatever their number:
    one analysis of all the probes (:func:`schemas_of`), the execution and the client's read of a
    setting that ``first()`` makes. (Putting the probes in the query, as empty aggregates, saves the
    analysis but costs more than it on Sail (0.7.2): it runs them, and analyses the whole query.)
    """
    schemas = schemas_of(probes)
    row = query.first()
    if row is None:
        raise ValueError("expected a one-row query, got no row")
    return row.asDict(), schemas


def fetch_arrow(df: DataFrame) -> pa.Table:
    """The rows of ``df`` as Arrow, in one round trip, with the engine's own Arrow types (the
    caller casts them to where they go). ``DataFrame.toArrow`` asks for the schema first (a second
    round trip) to cast the result to Spark's types; Spark Connect's execution already returns
    Arrow, which ``_to_table`` hands over as it came."""
    to_table = getattr(df, "_to_table", None)
    if to_table is None:  # classic Spark
        return df.toArrow()
    table, _ = to_table()
    return table


def supports_delta(spark: SparkSession) -> bool:
    """Whether Delta reads/writes work in this session (false on classic Spark without jars)."""
    if _is_connect(spark):
        return True
    try:
        return "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or "")
    except Exception:  # pragma: no cover - defensive
        return False


def _is_connect(spark: SparkSession) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _databricks_session() -> SparkSession:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise EngineUnavailableError(
            "LAKEHOUSE_ENGINE=databricks but no active SparkSession: run this on a Databricks cluster"
        )
    return spark


def _sail_address() -> str:
    global _sail_server
    with _lock:
        if _sail_server is None or not _sail_server.running:
            # Sail logs every session at INFO (and task aborts at exit at WARN) unless told otherwise.
            os.environ.setdefault("RUST_LOG", "warn,sail_common::actor=error")
            # Sail's allocator (mimalloc, read when pysail loads) hands freed pages back to the OS
            # 1 s after they are freed; a load frees and refills its batches faster than that, so
            # the process held ~15% more than it used. 100 ms: SF10 first load, 7 paired runs,
            # median peak RSS 1,028 -> 883 MB, wall 9.2 -> 9.5 s (within this machine's noise);
            # 0 (at once) gave ~690 MB but made daily runs ~25% slower.
            os.environ.setdefault("MIMALLOC_PURGE_DELAY", "100")
            # localCheckpoint() (see materialize) needs a folder; one per process, removed at exit.
            if "SAIL_EXECUTION__CHECKPOINT__PATH" not in os.environ:
                folder = tempfile.mkdtemp(prefix="lakehouse-sail-checkpoints-")
                atexit.register(shutil.rmtree, folder, ignore_errors=True)
                os.environ["SAIL_EXECUTION__CHECKPOINT__PATH"] = folder
            try:
                from pysail.spark import SparkConnectServer
            except ImportError as exc:  # pragma: no cover - depends on install
                raise EngineUnavailableError(
                    "the embedded Sail engine needs the 'local' extra: uv sync --extra local"
                ) from exc
            server = SparkConnectServer(ip="127.0.0.1", port=0)
            server.start(background=True)
            atexit.register(server.stop)
            _sail_server = server
            log.info("started embedded Sail Spark Connect server at %s", server.listening_address)
        host, port = _sail_server.listening_address
    return f"sc://{host}:{port}"


def _connect_session(remote: str, *, local: bool) -> SparkSession:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(remote).getOrCreate()
    conf = {**SESSION_CONF, **(LOCAL_CONF if local else {})}
    for key, value in conf.items():
        spark.conf.set(key, value)
    return spark


def _classic_session(settings: Settings) -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[*]").appName("lakehouse")
    for key, value in {**SESSION_CONF, **LOCAL_CONF, "spark.ui.enabled": "false"}.items():
        builder = builder.config(key, value)
    jars_dir = settings.delta_jars_dir
    if jars_dir is not None and str(jars_dir) == "maven":  # a machine that reaches Maven Central
        from delta import configure_spark_with_delta_pip

        builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension").config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        return configure_spark_with_delta_pip(builder).getOrCreate()
    if jars_dir is not None:
        jars = sorted(str(p) for p in jars_dir.glob("*.jar"))
        if not jars:
            raise EngineUnavailableError(f"LAKEHOUSE_DELTA_JARS={jars_dir} contains no .jar files")
        builder = (
            builder.config("spark.jars", ",".join(jars))
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        )
    return builder.getOrCreate()
