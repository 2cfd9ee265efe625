"""Strict, total parsers for text columns: a value that does not parse becomes NULL, never an error.

Both engines raise on impossible dates inside ``make_date``/``to_date`` under ANSI mode and Sail
has no ``try_to_date`` (ENGINE_NOTES.md), so dates are validated field by field before being built.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_YYYYMMDD = r"^[0-9]{8}$"


def _safe_date(valid: Column, year: Column, month: Column, day: Column) -> Column:
    ok_month = valid & month.between(1, 12) & (year >= 1)
    y = F.when(ok_month, year).otherwise(F.lit(2000))
    m = F.when(ok_month, month).otherwise(F.lit(1))
    days_in_month = F.dayofmonth(F.last_day(F.make_date(y, m, F.lit(1))))
    ok = ok_month & day.between(1, 31) & (day <= days_in_month)
    d = F.when(ok, day).otherwise(F.lit(1))
    return F.when(ok, F.make_date(y, m, d)).otherwise(F.lit(None).cast("date"))


def parse_iso_date(col: Column) -> Column:
    """``yyyy-MM-dd`` (surrounding spaces allowed) → DATE; anything else → NULL."""
    text = F.trim(col)
    valid = F.coalesce(text.rlike(_ISO_DATE), F.lit(False))
    part = lambda start, length: F.substring(text, start, length).try_cast("int")  # noqa: E731
    return _safe_date(valid, part(1, 4), part(6, 2), part(9, 2))


def parse_yyyymmdd(col: Column) -> Column:
    """``yyyyMMdd`` integer text → DATE; 0, wrong length or an impossible date → NULL (rule S10)."""
    text = F.trim(col)
    valid = F.coalesce(text.rlike(_YYYYMMDD), F.lit(False))
    part = lambda start, length: F.substring(text, start, length).try_cast("int")  # noqa: E731
    return _safe_date(valid, part(1, 4), part(5, 2), part(7, 2))


def parse_int(col: Column, type_: str = "int") -> Column:
    """Integer text (surrounding spaces allowed) → INT/BIGINT; anything else → NULL."""
    return F.trim(col).try_cast(type_)
