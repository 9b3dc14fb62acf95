"""The ledger: which jobs ran, in which process, and the workers' partition events.

Worker processes of the subprocess apps (`tests/integration/ledger_app.py`,
`tests/chaos/chaos_app.py`) append to it; the test reads it while they run and at
the end, to check that nothing acknowledged was lost, what ran twice, and in which
order. A ledger is one SQLite database in WAL mode, `<directory>/ledger.sqlite`
(the directory is the test's `tmp_path`, named to the workers by `LEDGER_DIR`):
WAL lets many processes write while one reads, and each row is its own
transaction, so a row committed before a kill -9 survives it and no row is ever
half written. The tables are STRICT: a row of the wrong shape is refused when it
is written, not misread at the end.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

ENV = "LEDGER_DIR"
FILE = "ledger.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER NOT NULL, key TEXT NOT NULL, partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    pid INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
) STRICT;
"""


def connect(directory: Path) -> sqlite3.Connection:
    """A connection in autocommit mode on the WAL ledger in `directory` (created if missing)."""
    db = sqlite3.connect(
        directory / FILE, timeout=30, isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


def create(directory: Path) -> None:
    """Create the ledger before any writer starts (WAL mode is set once, not in a race)."""
    connect(directory).close()


class Writer:
    """Appends to the ledger: one connection per process, shared by its threads under a lock.

    The connection opens on the first row, in the directory given or else the one
    `LEDGER_DIR` names (so an app module that writes rows can be imported without
    one, e.g. by `kafka-jobs status -A ...`). Rows carry the writing process's pid;
    a forked child (a process pool) opens its own connection, never using the parent's.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        os.register_at_fork(after_in_child=self._forked)

    def execution(self, seq: int, key: str, partition: int, offset: int) -> None:
        """One run of job `seq` (of `key`), from record `partition`/`offset`, finished now."""
        self._write(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?)",
            (seq, key, partition, offset, os.getpid(), time.time()),
        )

    def event(self, kind: str, detail: object) -> None:
        """A partition event of this process (`detail` stored as JSON)."""
        self._write(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            (os.getpid(), time.time(), kind, json.dumps(detail, default=str)),
        )

    def _write(self, sql: str, row: tuple[object, ...]) -> None:
        with self._lock:
            if self._db is None:
                self._db = connect(self._directory or Path(os.environ[ENV]))
            self._db.execute(sql, row)

    def _forked(self) -> None:
        # The parent's connection and lock (perhaps held by a thread that is not here) stay
        # the parent's.
        self._lock = threading.Lock()
        self._db = None


@dataclass(frozen=True)
class Execution:
    """One run of a job: which job (seq, key), which record, which process, when."""

    seq: int
    key: str
    partition: int
    offset: int
    pid: int
    at: float


class Event(NamedTuple):
    """A partition event written by a worker (`detail` is JSON)."""

    pid: int
    at: float
    kind: str
    detail: str


def _rows(directory: Path, sql: str) -> list[Any]:
    if not (directory / FILE).exists():
        return []
    db = connect(directory)
    try:
        return list(db.execute(sql).fetchall())
    finally:
        db.close()


def executions(directory: Path) -> list[Execution]:
    """Every execution recorded so far, in the order they were written."""
    rows = _rows(directory, "SELECT * FROM executions ORDER BY rowid")
    return [Execution(*row) for row in rows]


def events(directory: Path) -> list[Event]:
    """Every partition event recorded so far, in the order they were written."""
    rows = _rows(directory, "SELECT pid, at, kind, detail FROM events ORDER BY rowid")
    return [Event(*row) for row in rows]


def distinct(directory: Path) -> int:
    """How many different jobs ran at least once."""
    rows = _rows(directory, "SELECT COUNT(DISTINCT seq) FROM executions")
    return int(rows[0][0]) if rows else 0


def duplicates(runs: list[Execution]) -> int:
    """Executions beyond the first of each job."""
    return sum(n - 1 for n in Counter(e.seq for e in runs).values())


def assert_order_per_process(
    runs: list[Execution],
    by: Literal["partition", "key"] = "partition",
    *,
    replays: bool = False,
) -> None:
    """Within one worker process, each partition's (or key's) jobs ran in order.

    In order means both in offset order and in enqueue (seq) order: the jobs are
    enqueued by one idempotent producer, so for one partition (and so for one key)
    the two agree.

    `replays=False`: a process never runs a job twice (what a run without
    rebalances in the middle promises). `replays=True`: runs of a job this process
    already ran are replays (its partition came back to it before the offsets were
    committed) and are skipped: a replay repeats a range in order.
    """
    last: dict[tuple[int, object], Execution] = {}
    ran: set[tuple[int, int]] = set()
    for run in runs:
        if (run.pid, run.seq) in ran:
            assert replays, f"job {run.seq} ran twice in process {run.pid}: {run}"
            continue
        ran.add((run.pid, run.seq))
        slot = (run.pid, getattr(run, by))
        before = last.get(slot)
        assert before is None or (run.offset > before.offset and run.seq > before.seq), (
            f"{by} {getattr(run, by)} ran out of order in {run.pid}: {run} after {before}"
        )
        last[slot] = run
