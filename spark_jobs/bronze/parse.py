"""Pure transforms that turn raw CSV lines into bronze records or quarantined lines.

Input is one row per physical line (``_line_number``, ``_raw_line``). The CSV dialect is the one
of the exports: comma separated, ``"`` quotes, ``""`` escapes a quote inside a quoted field,
empty field = NULL. A record spanning several lines (quoted line break) is not supported: its
pieces have unbalanced quotes and are quarantined, so nothing is lost.

Parsing is done with DataFrame expressions rather than the CSV reader because the embedded
engine fails a whole read on one malformed record (see ENGINE_NOTES.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.contracts import BATCH_DATE, INGESTED_AT, LINE_NUMBER, RAW_LINE, REASON, SOURCE_FILE


@dataclass(frozen=True)
class Ingestion:
    """Where a batch of lines came from: stamped on every bronze and quarantine row."""

    source_file: str
    batch_date: date
    ingested_at: datetime


# One CSV field: a quoted field (with "" escapes) or anything up to the next comma.
_FIELD_REGEX = r'(?:^|,)("(?:[^"]|"")*"|[^,]*)'
_FIELDS = "_fields"


def _field(index: int) -> Column:
    """Field ``index`` of the parsed line: unquoted, empty → NULL (like the CSV reader)."""
    raw = F.get(F.col(_FIELDS), index)
    quoted = raw.startswith('"') & raw.endswith('"') & (F.length(raw) >= 2)
    inner = F.regexp_replace(F.substring(raw, 2, 1_000_000_000), '"$', "")
    value = F.when(quoted, F.regexp_replace(inner, '""', '"')).otherwise(raw)
    return F.when(value == "", F.lit(None).cast("string")).otherwise(value)


# Control characters (Unicode category Cc) other than tab: C0 (a CR still in the line after its
# trailing CR was stripped included), DEL and C1. They are no text in a name, key or code, break
# CSV/BI consumers downstream (a NUL ends a C string) and mostly mean a corrupted export. A line
# feed cannot occur: it ends the line.
CONTROL_CHARACTERS = "[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]"


def _control_character_reason(fields: Column, columns: Sequence[str] | None) -> tuple[Column, Column]:
    """(whether a field holds a control character, the reason naming the first one and its field)."""
    position = F.array_position(F.transform(fields, lambda f: f.rlike(CONTROL_CHARACTERS)), True)
    character = F.regexp_extract(F.get(fields, (position - 1).cast("int")), f"({CONTROL_CHARACTERS})", 1)
    reason = F.concat(
        F.lit("control character "),
        F.format_string("U+%04X", F.ascii(character)),
        F.lit(" in field "),
        position.cast("string"),
    )
    if columns:
        name = F.get(F.array(*[F.lit(c) for c in columns]), (position - 1).cast("int"))
        reason = F.concat(reason, F.lit(" ("), name, F.lit(")"))
    return position > 0, reason


def parse_csv_lines(n_fields: int, *, columns: Sequence[str] | None = None) -> Callable[[DataFrame], DataFrame]:
    """Split ``_raw_line`` into ``_fields`` and set ``_reason`` (NULL when the line is a record).

    Reasons, first that applies: invalid UTF-8 (decoded as U+FFFD), unbalanced quotes, text after
    a closing quote, wrong number of fields, a control character in a field (``columns``, the
    column names in file order, name the field in the reason).
    """

    def transform(lines: DataFrame) -> DataFrame:
        line = F.col(RAW_LINE)
        has_quote = F.instr(line, '"') > 0
        fields = F.when(has_quote, F.regexp_extract_all(line, F.lit(_FIELD_REGEX), 1)).otherwise(F.split(line, ","))
        quote_count = F.length(line) - F.length(F.regexp_replace(line, '"', ""))
        n_found = F.size(F.col(_FIELDS))
        has_control, control_reason = _control_character_reason(F.col(_FIELDS), columns)
        reason = (
            F.when(F.instr(line, "\ufffd") > 0, F.lit("invalid UTF-8 byte sequence"))
            .when(quote_count % 2 == 1, F.lit("unbalanced quotes (broken quoting or a record spanning lines)"))
            .when(
                has_quote & (F.array_join(F.col(_FIELDS), ",") != line),
                F.lit("malformed quoted field (text after a closing quote)"),
            )
            .when(
                n_found != n_fields,
                F.concat(F.lit(f"expected {n_fields} fields, found "), n_found.cast("string")),
            )
            .when(has_control, control_reason)
        )
        return lines.withColumn(_FIELDS, fields).withColumn(REASON, reason)

    return transform


def bronze_records(columns: Sequence[str], meta: Ingestion) -> Callable[[DataFrame], DataFrame]:
    """Parsed lines without a reason → one column per source field (text) + ingestion metadata.

    ``columns`` are the bronze column names in the order the fields appear in the file.
    """

    def transform(parsed: DataFrame) -> DataFrame:
        return parsed.filter(F.col(REASON).isNull()).select(
            *[_field(i).alias(name) for i, name in enumerate(columns)],
            *_metadata(meta),
        )

    return transform


def quarantined_lines(meta: Ingestion) -> Callable[[DataFrame], DataFrame]:
    """Parsed lines with a reason → the raw line, where it came from and why it was rejected."""

    def transform(parsed: DataFrame) -> DataFrame:
        return parsed.filter(F.col(REASON).isNotNull()).select(
            *_metadata(meta),
            F.col(RAW_LINE),
            F.col(REASON),
        )

    return transform


def _metadata(meta: Ingestion) -> list[Column]:
    return [
        F.lit(meta.source_file).alias(SOURCE_FILE),
        F.lit(meta.batch_date).cast("date").alias(BATCH_DATE),
        # as text with its offset (a naive time is local, as PySpark takes it): a datetime literal
        # makes the client ask the session for its timestamp type, one round trip per file
        F.lit(meta.ingested_at.astimezone().isoformat()).cast("timestamp").alias(INGESTED_AT),
        F.col(LINE_NUMBER).cast("long").alias(LINE_NUMBER),
    ]
