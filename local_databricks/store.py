"""Run state in SQLite, so that it survives a restart of the service."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

ACTIVE = ("PENDING", "QUEUED", "RUNNING", "TERMINATING")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ids (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, run_name TEXT, idempotency_token TEXT UNIQUE, payload TEXT,
    life_cycle_state TEXT, result_state TEXT, state_message TEXT,
    submit_time INTEGER, start_time INTEGER, end_time INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id INTEGER PRIMARY KEY, parent_run_id INTEGER, task_key TEXT, position INTEGER, spec TEXT,
    life_cycle_state TEXT, result_state TEXT, state_message TEXT, start_time INTEGER, end_time INTEGER,
    error TEXT, error_trace TEXT, log_path TEXT
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class RunStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def _new_id(self, kind: str) -> int:
        cur = self._db.execute("INSERT INTO ids (kind) VALUES (?)", (kind,))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def create_run(self, payload: dict[str, Any], log_dir: Path) -> tuple[int, bool]:
        """Insert a PENDING run and its tasks; (run_id, created). A known idempotency token returns
        the existing run instead of creating another. Any error rolls the transaction back."""
        token = payload.get("idempotency_token") or None  # an empty token is no token
        with self._lock:
            if token:
                row = self._db.execute("SELECT run_id FROM runs WHERE idempotency_token = ?", (token,)).fetchone()
                if row:
                    return int(row["run_id"]), False
            self._db.execute("BEGIN")
            try:
                run_id = self._insert_run(payload, token, log_dir)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return run_id, True

    def _insert_run(self, payload: dict[str, Any], token: str | None, log_dir: Path) -> int:
        run_id = self._new_id("run")
        self._db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, 'PENDING', NULL, 'Waiting for a slot', ?, NULL, NULL)",
            (run_id, payload.get("run_name") or f"run-{run_id}", token, json.dumps(payload), now_ms()),
        )
        for position, task in enumerate(payload["tasks"]):
            task_run_id = self._new_id("task")
            # Named by ids only: nothing from the request goes into a path.
            log_path = log_dir / str(run_id) / f"{task_run_id}.log"
            self._db.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, 'PENDING', NULL, '', NULL, NULL, NULL, NULL, ?)",
                (task_run_id, run_id, task["task_key"], position, json.dumps(task), str(log_path)),
            )
        return run_id

    def update_run(self, run_id: int, **fields: Any) -> None:
        self._update("runs", run_id, fields)

    def update_task(self, task_run_id: int, **fields: Any) -> None:
        self._update("tasks", task_run_id, fields)

    def _update(self, table: str, key: int, fields: dict[str, Any]) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE {table} SET {cols} WHERE run_id = ?", (*fields.values(), key))

    def run(self, run_id: int) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()

    def tasks(self, run_id: int) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(
                "SELECT * FROM tasks WHERE parent_run_id = ? ORDER BY position", (run_id,)
            ).fetchall()

    def task(self, task_run_id: int) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute("SELECT * FROM tasks WHERE run_id = ?", (task_run_id,)).fetchone()

    def runs(
        self, *, states: str, limit: int, offset: int = 0, older_than: int | None = None, newer_than: int | None = None
    ) -> list[sqlite3.Row]:
        """Runs newest first. ``states``: ``all``, ``active`` or ``completed``. ``older_than`` /
        ``newer_than`` (run ids, exclusive) give the page after or before a page (keyset pagination)."""
        where, args = self._run_filter(states, older_than=older_than, newer_than=newer_than)
        order = "ASC" if newer_than is not None else "DESC"  # the page just newer than a run: nearest first
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM runs {where} ORDER BY run_id {order} LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
        return rows[::-1] if order == "ASC" else rows

    def has_runs(self, *, states: str, older_than: int | None = None, newer_than: int | None = None) -> bool:
        where, args = self._run_filter(states, older_than=older_than, newer_than=newer_than)
        with self._lock:
            return self._db.execute(f"SELECT 1 FROM runs {where} LIMIT 1", args).fetchone() is not None

    @staticmethod
    def _run_filter(states: str, *, older_than: int | None, newer_than: int | None) -> tuple[str, tuple[int, ...]]:
        clauses = {
            "all": [],
            "active": [f"life_cycle_state IN {ACTIVE}"],
            "completed": [f"life_cycle_state NOT IN {ACTIVE}"],
        }[states]
        args: list[int] = []
        if older_than is not None:
            clauses.append("run_id < ?")
            args.append(older_than)
        if newer_than is not None:
            clauses.append("run_id > ?")
            args.append(newer_than)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def active_runs(self) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(f"SELECT * FROM runs WHERE life_cycle_state IN {ACTIVE} ORDER BY run_id").fetchall()
