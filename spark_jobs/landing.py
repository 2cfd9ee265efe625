"""The landing zone: locating one day's export files and looking at them before Spark reads them.

Layout: ``<landing_root>/<YYYY-MM-DD>/<source_crm|source_erp>/<file>.csv``, file names matched
case-insensitively. On Databricks the landing root is a Unity Catalog Volume (``/Volumes/...``),
which the driver sees as a POSIX path, so plain Python file access works in both places.
"""

from __future__ import annotations

import codecs
import csv
import os
from dataclasses import dataclass
from datetime import date

from spark_jobs.errors import HeaderMismatchError
from spark_jobs.settings import Settings
from spark_jobs.sources import Source

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    header: tuple[str, ...] | None  # None: empty file
    valid_utf8: bool


def find_source_file(settings: Settings, source: Source, batch_date: date) -> str | None:
    """Path of ``source``'s file in the batch of ``batch_date``, or None if it was not delivered."""
    folder = os.path.join(settings.landing_dir(batch_date), source.system)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return None
    matches = sorted(n for n in names if n.lower() == source.file_name.lower())
    if len(matches) > 1:
        raise FileExistsError(f"{folder}: several files match {source.file_name} case-insensitively: {matches}")
    return os.path.join(folder, matches[0]) if matches else None


def inspect_file(path: str) -> FileInfo:
    """Read the header and check the whole file decodes as UTF-8 (streamed, constant memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    valid = True
    first_line = b""
    have_first = False
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if not have_first:
                first_line += chunk
                if b"\n" in first_line:
                    first_line = first_line.split(b"\n", 1)[0]
                    have_first = True
            if valid:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    valid = False
        if valid:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                valid = False
    size = os.path.getsize(path)
    text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
    header = tuple(c.strip() for c in next(csv.reader([text]))) if text.strip() else None
    return FileInfo(path=path, size=size, header=header, valid_utf8=valid)


def header_positions(source: Source, info: FileInfo) -> tuple[str, ...]:
    """Bronze column names in file order; raise :class:`HeaderMismatchError` if the header differs.

    Columns may come in another order (they are matched by name, case-insensitively); a missing,
    extra or renamed column fails with a message naming the file and the columns.
    """
    assert info.header is not None
    found = [c.lower() for c in info.header]
    expected = list(source.bronze_columns)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    duplicated = sorted({c for c in found if found.count(c) > 1})
    if missing or extra or duplicated:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        if duplicated:
            parts.append(f"duplicated columns {duplicated}")
        raise HeaderMismatchError(
            f"{info.path}: header does not match table {source.table}: {'; '.join(parts)}. "
            f"Expected header: {','.join(source.columns)}; found: {','.join(info.header)}"
        )
    return tuple(found)
