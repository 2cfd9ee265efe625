"""One writer per local table: an advisory lock file next to each local Delta table.

Why: a job decides *how* to write from what the table holds (a new batch's slice is appended, a
merge that changes nothing stored appends its new keys). Two writers that decide from the same
snapshot would both append, and Delta accepts two blind appends (measured on Sail 0.7: 40
concurrent appends from two processes all commit; concurrent ``replaceWhere`` writes fail with
"Failed to commit transaction"), leaving duplicate keys. Holding this lock from the first read to
the last commit of a table makes the decision and the write one step for every writer.

The lock is ``flock`` on ``<table path>.lock``: released by the kernel when its process dies (no
stale locks after a crash or a kill), reentrant within a process (a job holds its tables' locks and
the table store takes them again per write), and waited for, so a second writer runs after the
first has committed and finds its work done. Catalog (Unity Catalog) tables have no local path:
there every write reads what it replaces, so Delta's optimistic concurrency detects the conflict
(see ``TableStore``).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from spark_jobs.errors import TableBusyError

log = logging.getLogger(__name__)


# lock path -> (file descriptor, depth, hold): this process's locks; ``hold`` numbers each taking
# of a lock (a reentrant taking keeps it), so that what was read under one hold is known to be it.
_held: dict[str, tuple[int, int, int]] = {}
_holds = itertools.count(1)
_guard = threading.Lock()


def lock_path(table_path: str) -> str:
    return table_path.rstrip("/") + ".lock"


def hold_id(table_path: str) -> int | None:
    """The number of this process's current hold of the table's lock (a new one each time the lock
    is taken, the same while it is held), None when it does not hold it: while it is held, no other
    writer commits to the table, so what this process read of it stays true but for its own commits."""
    with _guard:
        held = _held.get(lock_path(table_path))
    return held[2] if held is not None else None


def _holder(fd: int) -> str:
    with suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
    return "unknown"


def _acquire(path: str, *, timeout_seconds: float, poll_seconds: float) -> None:
    with _guard:
        if path in _held:
            fd, depth, hold = _held[path]
            _held[path] = (fd, depth + 1, hold)
            return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_seconds
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not waited:
                log.warning("table lock %s is held by %s: waiting up to %.0f s", path, _holder(fd), timeout_seconds)
                waited = True
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise TableBusyError(
                    f"another writer ({holder}) has held {path} for more than {timeout_seconds:.0f} s: "
                    "wait for it to finish (or stop it), then re-run this job"
                ) from None
            time.sleep(poll_seconds)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    with _guard:
        _held[path] = (fd, 1, next(_holds))


def _release(path: str) -> None:
    with _guard:
        fd, depth, hold = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1, hold)
            return
        del _held[path]
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def exclusive(table_paths: Iterable[str], *, timeout_seconds: float, poll_seconds: float = 0.05) -> Iterator[None]:
    """Hold the write lock of every table in ``table_paths`` (taken in sorted order, so two jobs
    locking overlapping sets cannot deadlock); wait up to ``timeout_seconds`` for each, else raise
    :class:`TableBusyError`."""
    paths = sorted({lock_path(p) for p in table_paths})
    taken: list[str] = []
    try:
        for path in paths:
            _acquire(path, timeout_seconds=timeout_seconds, poll_seconds=poll_seconds)
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            _release(path)
