"""The jobs' named errors: what failed, in a message a person can act on.

Defined here, not in the job that raises them, so that the command line and every layer can name
them without importing another layer's job.
"""

from __future__ import annotations


class DataQualityError(RuntimeError):
    """Expectations failed; the message carries the summary on-call needs."""


class HeaderMismatchError(ValueError):
    """A file's header does not have the columns its table expects."""


class ConservationError(RuntimeError):
    """Rows went missing (or appeared) between bronze and silver."""


class EmptyRedeliveryError(ValueError):
    """An empty or header-only file was delivered again for a batch that had data."""
