"""Bronze job: one day's landing batch → ``bronze.<table>`` and ``bronze.<table>_quarantine``.

Re-running a batch replaces that batch's slice only (``_batch_date = D``); other batches are
untouched. A file that was not delivered leaves its table's batch as it is (no new data today).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from spark_jobs.bronze.parse import Ingestion, bronze_records, parse_csv_lines, quarantined_lines
from spark_jobs.contracts import (
    BATCH_DATE,
    LINE_NUMBER,
    QUARANTINE_SCHEMA,
    QUARANTINE_SUFFIX,
    RAW_LINE,
    REASON,
    bronze_schema,
)
from spark_jobs.engine import fetch_one, materialize
from spark_jobs.errors import EmptyRedeliveryError
from spark_jobs.landing import FileInfo, find_source_file, header_positions, inspect_file
from spark_jobs.settings import Settings, TableRef
from spark_jobs.sources import SOURCES, Source
from spark_jobs.tables import TableStore, batch_predicate

log = logging.getLogger(__name__)

# A file is read as one row (see ``read_lines``), so its lines start in one partition: a file larger
# than this is spread over one partition per this many bytes before parsing, for all cores to parse
# (SF10 sales, 39 MB: bronze 3.1 -> 2.45 s on 2 cores). Smaller files skip the shuffle.
PARSE_SPLIT_BYTES = 32 * 1024 * 1024
MAX_PARSE_PARTITIONS = 64
# The parsed lines are used three times (counted, then written as records and as rejects): a file
# larger than this is parsed once and kept (a round trip to the engine); a smaller one, a daily
# delivery, is parsed again each time, which costs less than that round trip.
KEEP_PARSED_ABOVE_BYTES = 512 * 1024


@dataclass(frozen=True)
class BronzeTableResult:
    table: str
    status: str  # loaded | empty | missing
    source_file: str | None = None
    records: int = 0
    quarantined: int = 0

    def __str__(self) -> str:
        if self.status == "missing":
            return f"{self.table}: no file delivered (batch left as it was)"
        return f"{self.table}: {self.records} records, {self.quarantined} quarantined from {self.source_file}"


def read_lines(spark: SparkSession, info: FileInfo) -> DataFrame:
    """Physical lines of one file as (``_line_number``, ``_raw_line``), blank lines dropped.

    The file is read as ONE binary row and split on ``\\n``, so line numbers are positions in the
    file whatever the engine's partitioning: Sail reorders the rows of a parallel text scan (so
    ``monotonically_increasing_id`` numbering is wrong) and splits even a ``wholetext`` read into
    byte ranges (both seen with pysail 0.7.2). A trailing ``\\r`` (CRLF) is stripped. Undecodable
    bytes become U+FFFD, so a file with a few of them still loads and the affected lines are
    quarantined. Spark limits a binary row, hence one export file, to 2 GB.
    """
    if not info.valid_utf8:
        log.warning("%s is not valid UTF-8: lines with undecodable bytes will be quarantined", info.path)
    # limit(1): Sail (0.7.2) returns a file larger than ~2 MB once per scan partition, whole each time.
    binary = spark.read.format("binaryFile").load(info.path).limit(1)
    content = binary.select(F.expr("make_valid_utf8(content)").alias("text"))
    lines = content.select(F.posexplode(F.split("text", "\n")).alias("pos", "line")).select(
        (F.col("pos") + 1).cast("long").alias(LINE_NUMBER),
        F.regexp_replace("line", "\r$", "").alias(RAW_LINE),
    )
    return lines.filter(F.col(RAW_LINE) != "")


@dataclass(frozen=True)
class IngestedFile:
    records: DataFrame  # bronze table schema
    rejects: DataFrame  # quarantine schema
    # One row: the numbers of records and rejects, in columns ``<prefix>ok`` and ``<prefix>bad``, to
    # be fetched with the other files' in one query (see ``counts``); None: an empty file.
    counts_query: DataFrame | None
    prefix: str = ""

    def counts(self, row: Mapping[str, Any] | None) -> tuple[int, int]:
        """(records, rejects), read from a row holding ``counts_query``'s columns."""
        if self.counts_query is None or row is None:
            return 0, 0
        return int(row[f"{self.prefix}ok"] or 0), int(row[f"{self.prefix}bad"] or 0)


def ingest_file(
    spark: SparkSession, *, source: Source, info: FileInfo, batch_date: date, ingested_at: datetime, prefix: str = ""
) -> IngestedFile:
    """Records and quarantined lines of one delivered file, and the query counting them (one parse)."""
    meta = Ingestion(info.path, batch_date, ingested_at)
    if info.header is None:  # empty file: an empty batch
        empty = spark.createDataFrame([], bronze_schema(source)), spark.createDataFrame([], QUARANTINE_SCHEMA)
        return IngestedFile(*empty, None, prefix)
    file_columns = header_positions(source, info)
    lines = read_lines(spark, info).filter(F.col(LINE_NUMBER) > 1)
    if info.size > PARSE_SPLIT_BYTES:
        lines = lines.repartition(min(math.ceil(info.size / PARSE_SPLIT_BYTES), MAX_PARSE_PARTITIONS))
    parsed = lines.transform(parse_csv_lines(len(file_columns), columns=file_columns))
    if info.size > KEEP_PARSED_ABOVE_BYTES:
        parsed = materialize(parsed)
    counts = parsed.agg(
        F.count_if(F.col(REASON).isNull()).alias(f"{prefix}ok"),
        F.count_if(F.col(REASON).isNotNull()).alias(f"{prefix}bad"),
    )
    records = parsed.transform(bronze_records(file_columns, meta)).select(*bronze_schema(source).fieldNames())
    return IngestedFile(records, parsed.transform(quarantined_lines(meta)), counts, prefix)


def _refuse_empty_redelivery(
    store: TableStore, *, name: str, path: str, batch_date: date, tables: tuple[TableRef, ...]
) -> None:
    where = batch_predicate(batch_date, BATCH_DATE)
    if any(store.exists(t) and not store.slice_is_empty(t, where) for t in tables):
        raise EmptyRedeliveryError(
            f"bronze {name}: {path} has no data lines, but batch {batch_date} of bronze.{name} already has "
            "rows; an empty or header-only re-delivery usually means a broken export, so the batch is kept. "
            "Re-deliver the file, or re-run with --allow-empty-redelivery to replace the batch with nothing."
        )


def run_bronze(
    spark: SparkSession,
    settings: Settings,
    batch_date: date,
    *,
    tables: Iterable[str] | None = None,
    ingested_at: datetime | None = None,
    allow_empty_redelivery: bool = False,
) -> list[BronzeTableResult]:
    """Load every source file of ``batch_date`` into bronze; return what happened per table.

    A file without data lines re-delivered for a batch that holds rows is refused
    (:class:`EmptyRedeliveryError`, before anything is written): it usually means a broken export.
    ``allow_empty_redelivery`` (CLI ``--allow-empty-redelivery``) replaces the batch with nothing.

    Every delivered file is parsed first (a header that does not match fails the batch before any
    table is written), the records and rejects of all of them are counted in one query, then each
    table's slice is written.
    """
    store = TableStore(spark, settings)
    ingested_at = ingested_at or datetime.now(UTC)
    where = batch_predicate(batch_date, BATCH_DATE)
    results: dict[str, BronzeTableResult] = {}
    delivered: list[tuple[str, str, FileInfo, IngestedFile]] = []
    names = list(tables or SOURCES)
    for i, name in enumerate(names):
        source = SOURCES[name]
        path = find_source_file(settings, source, batch_date)
        if path is None:
            log.warning("bronze %s: no %s in batch %s; nothing to load", name, source.file_name, batch_date)
            results[name] = BronzeTableResult(name, "missing")
            continue
        info = inspect_file(path)
        ingested = ingest_file(
            spark, source=source, info=info, batch_date=batch_date, ingested_at=ingested_at, prefix=f"f{i}_"
        )
        delivered.append((name, path, info, ingested))
    # One writer of every table the batch writes, from before its files are counted (their logs are
    # read meanwhile: see TableStore.writing) to the last commit.
    written = [store.ref("bronze", name + suffix) for name, *_ in delivered for suffix in ("", QUARANTINE_SUFFIX)]
    with store.writing(written):
        # The counts of every file in one query, which also brings the schemas of what is written.
        queries = [f.counts_query for *_, f in delivered if f.counts_query is not None]
        row: dict[str, Any] | None = None
        schemas: Sequence[StructType | None] = [None] * (2 * len(delivered))
        if queries:
            row, schemas = fetch_one(
                functools.reduce(DataFrame.crossJoin, queries),
                probes=[df for *_, f in delivered for df in (f.records, f.rejects)],
            )
        for i, (name, path, info, ingested) in enumerate(delivered):
            n_records, n_rejects = ingested.counts(row)
            target, quarantine = store.ref("bronze", name), store.ref("bronze", name + QUARANTINE_SUFFIX)
            if n_records + n_rejects == 0 and not allow_empty_redelivery:
                _refuse_empty_redelivery(
                    store, name=name, path=path, batch_date=batch_date, tables=(target, quarantine)
                )
            store.replace_slice(
                ingested.records,
                target,
                where=where,
                partition_by=(BATCH_DATE,),
                schema=schemas[2 * i],
                rows=n_records,
            )
            store.replace_slice(
                ingested.rejects,
                quarantine,
                where=where,
                partition_by=(BATCH_DATE,),
                known_empty=n_rejects == 0,
                schema=schemas[2 * i + 1],
                rows=n_rejects,
            )
            status = "loaded" if info.header else "empty"
            results[name] = BronzeTableResult(name, status, path, n_records, n_rejects)
            log.info("bronze %s", results[name])
    return [results[name] for name in names]
