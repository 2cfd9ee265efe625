"""Strict, total parsers for text columns: a value that does not parse becomes NULL, never an error.

Under ANSI mode both engines raise on impossible dates in ``to_date``/``make_date`` and Sail has
no ``try_to_date`` (ENGINE_NOTES.md): dates are matched against their exact shape first, then
built with ``try_to_timestamp``, which gives NULL for impossible ones (2019-02-29, month 13).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_YYYYMMDD = r"^[0-9]{8}$"


def _date(col: Column, shape: str, fmt: str) -> Column:
    text = F.trim(col)
    parsed = F.to_date(F.try_to_timestamp(text, F.lit(fmt)))
    year_zero = F.substring(text, 1, 4) == "0000"  # parses, but is no calendar date
    return F.when(text.rlike(shape) & ~year_zero, parsed).otherwise(F.lit(None).cast("date"))


def parse_iso_date(col: Column) -> Column:
    """``yyyy-MM-dd`` (surrounding spaces allowed) → DATE; anything else → NULL."""
    return _date(col, _ISO_DATE, "yyyy-MM-dd")


def parse_yyyymmdd(col: Column) -> Column:
    """``yyyyMMdd`` integer text → DATE; 0, wrong length or an impossible date → NULL (rule S10)."""
    return _date(col, _YYYYMMDD, "yyyyMMdd")


def parse_int(col: Column, type_: str = "int") -> Column:
    """Integer text (surrounding spaces allowed) → INT/BIGINT; anything else → NULL."""
    return F.trim(col).try_cast(type_)
