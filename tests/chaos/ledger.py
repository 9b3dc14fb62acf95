"""The chaos ledger: every job execution and every partition event, in SQLite (WAL).

Worker processes append; the test reads it at the end. WAL lets many processes
write while one reads, and a row committed before a kill -9 survives it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER NOT NULL, key TEXT NOT NULL, partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    pid INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode on the WAL ledger (created if missing)."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class LedgerWriter:
    """One connection per process, shared by its threads under a lock."""

    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._lock = threading.Lock()

    def execution(self, seq: int, key: str, partition: int, offset: int, pid: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?)",
                (seq, key, partition, offset, pid, time.time()),
            )

    def event(self, pid: int, kind: str, detail: object) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?)",
                (pid, time.time(), kind, json.dumps(detail, default=str)),
            )


@dataclass(frozen=True)
class Execution:
    seq: int
    key: str
    partition: int
    offset: int
    pid: int
    at: float


def executions(path: Path) -> list[Execution]:
    """Every execution, in the order they were written."""
    if not path.exists():
        return []
    db = connect(path)
    try:
        rows = db.execute("SELECT * FROM executions ORDER BY rowid").fetchall()
    finally:
        db.close()
    return [Execution(*row) for row in rows]


def distinct(path: Path) -> int:
    """How many different jobs ran at least once."""
    if not path.exists():
        return 0
    db = connect(path)
    try:
        return int(db.execute("SELECT COUNT(DISTINCT seq) FROM executions").fetchone()[0])
    finally:
        db.close()


def duplicates(runs: list[Execution]) -> int:
    """Executions beyond the first of each job."""
    return sum(n - 1 for n in Counter(e.seq for e in runs).values())


def assert_key_order_per_process(runs: list[Execution]) -> None:
    """Within one worker process, each key's jobs first ran in enqueue (seq) order.

    Runs of a job this process already ran are replays (its partition came back to it
    before the offsets were committed) and are skipped: a replay repeats a range in order.
    """
    last: dict[tuple[int, str], int] = {}
    ran: set[tuple[int, int]] = set()
    for run in runs:
        if (run.pid, run.seq) in ran:
            continue
        ran.add((run.pid, run.seq))
        slot = (run.pid, run.key)
        assert run.seq > last.get(slot, -1), f"key {run.key} ran out of order in {run.pid}"
        last[slot] = run.seq
