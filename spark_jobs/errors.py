"""The jobs' named errors: what failed, in a message a person can act on, under a stable code.

Defined here, not in the module that raises them, so that the command line and every layer can name
them without importing another layer's job.

Every named error's text starts with ``[LAKEHOUSE_<CODE>]``. The text travels as it is (on Databricks
and locally, ``runs/get-output`` ``error`` is ``<Type>: <message>``), and the Airflow alerts
(``lakehouse_airflow.alerts.messages``) find the likely cause from that code, never from the English
of the message: rewording a message cannot change what on-call is told. The codes are a contract
with the alerts: a test checks that each one has a likely cause there.
"""

from __future__ import annotations

import re
from typing import ClassVar

CODE_PATTERN = re.compile(r"\[(LAKEHOUSE_[A-Z_]+)\]")


class LakehouseError(Exception):
    """A failure the jobs name. ``code`` is stable; the message is for people."""

    code: ClassVar[str] = "LAKEHOUSE_ERROR"

    def __str__(self) -> str:
        return f"[{self.code}] {super().__str__()}"


class DataQualityError(LakehouseError, RuntimeError):
    """Expectations failed; the message carries the summary on-call needs."""

    code = "LAKEHOUSE_DQ_FAILED"


class HeaderMismatchError(LakehouseError, ValueError):
    """A file's header does not have the columns its table expects."""

    code = "LAKEHOUSE_HEADER_MISMATCH"


class ConservationError(LakehouseError, RuntimeError):
    """Rows went missing (or appeared) between bronze and silver."""

    code = "LAKEHOUSE_ROWS_NOT_CONSERVED"


class EmptyRedeliveryError(LakehouseError, ValueError):
    """An empty or header-only file was delivered again for a batch that had data."""

    code = "LAKEHOUSE_EMPTY_REDELIVERY"


class SchemaMismatchError(LakehouseError, ValueError):
    """A DataFrame does not have the schema of the Delta table it is written to."""

    code = "LAKEHOUSE_SCHEMA_MISMATCH"


class TableNotFoundError(LakehouseError, LookupError):
    """A table that a job reads has never been written."""

    code = "LAKEHOUSE_TABLE_NOT_FOUND"


class TableBusyError(LakehouseError, RuntimeError):
    """Another process has been writing a table for longer than this one is willing to wait."""

    code = "LAKEHOUSE_TABLE_BUSY"


class SettingsError(LakehouseError, ValueError):
    """A setting is missing or has an invalid value."""

    code = "LAKEHOUSE_INVALID_SETTING"


class EngineUnavailableError(LakehouseError, RuntimeError):
    """The selected engine cannot do what was asked on this machine."""

    code = "LAKEHOUSE_ENGINE_UNAVAILABLE"


def named_errors() -> tuple[type[LakehouseError], ...]:
    """Every named error with its own code (the contract the alerts' likely causes cover)."""
    found: list[type[LakehouseError]] = []
    pending = list(LakehouseError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return tuple(found)


def error_code(text: str | None) -> str | None:
    """The first ``[LAKEHOUSE_...]`` code in an error text, if any."""
    match = CODE_PATTERN.search(text or "")
    return match.group(1) if match else None
