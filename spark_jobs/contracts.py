"""Schemas that cross a layer boundary: what bronze writes and silver reads.

``bronze.<table>`` holds every source column as text plus the lineage columns below;
``<layer>.<table>_quarantine`` holds the lines (bronze) or rows (silver) that were set aside.
The bronze job writes these tables and the silver job reads them, so neither owns the contract.
"""

from __future__ import annotations

from pyspark.sql.types import DateType, LongType, StringType, StructField, StructType, TimestampType

from spark_jobs.sources import Source

LINE_NUMBER = "_line_number"
RAW_LINE = "_raw_line"
REASON = "_reason"
SOURCE_FILE = "_source_file"
BATCH_DATE = "_batch_date"
INGESTED_AT = "_ingested_at"

QUARANTINE_SUFFIX = "_quarantine"  # <layer>.<table>_quarantine

_METADATA_FIELDS = [
    StructField(SOURCE_FILE, StringType()),
    StructField(BATCH_DATE, DateType()),
    StructField(INGESTED_AT, TimestampType()),
    StructField(LINE_NUMBER, LongType()),
]
QUARANTINE_SCHEMA = StructType(
    [*_METADATA_FIELDS, StructField(RAW_LINE, StringType()), StructField(REASON, StringType())]
)


def bronze_schema(source: Source) -> StructType:
    """``bronze.<source.table>``: the source's columns as text, then the lineage columns."""
    return StructType([*(StructField(c, StringType()) for c in source.bronze_columns), *_METADATA_FIELDS])
