"""Recent job outcomes for the dashboard: a bounded tail of each results partition, by task.

The results topic is keyed by job id, so "the latest results" has no index: the
dashboard reads the last `per_partition` records of every partition with a
plain consumer outside any group, folds each job's records into one row (the
first final outcome stands, as for `handle.get()`), and groups the rows by
task, newest first. A partition counts as read when librdkafka reports its end
(`enable.partition.eof`), not at the broker's end offset: the embedded broker
reports that one short after a batched write, which only makes the tail a few
records longer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message

from kafka_jobs.app import App
from kafka_jobs.connection.client import Client, Key
from kafka_jobs.results.outcome import FINAL_STATES, Outcome

log = logging.getLogger("kafka_jobs.web")

PER_PARTITION = 200
"""Records read from the end of each results partition."""
PER_TASK = 50
"""Rows shown per task."""
_VALUE_CHARS = 200


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One job's outcome as the dashboard lists it."""

    job_id: str
    task: str
    state: str
    attempts: int
    started_at_ms: int
    """0: unknown (written by a worker that did not record it)."""
    finished_at_ms: int
    written_at_ms: int
    """The record's timestamp: rows are ordered by it."""
    partition: int
    offset: int
    value: str | None = None
    """The value as short JSON text (succeeded jobs only)."""
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None

    @property
    def duration_ms(self) -> int | None:
        """Finished minus started, when both are known."""
        if self.started_at_ms <= 0 or self.finished_at_ms <= 0:
            return None
        return max(0, self.finished_at_ms - self.started_at_ms)

    @property
    def error_class(self) -> str | None:
        """The error's class name without its module."""
        return None if self.error_type is None else self.error_type.rsplit(".", 1)[-1]

    @classmethod
    def of(cls, outcome: Outcome, partition: int, offset: int, written_at_ms: int) -> ResultRow:
        """The row of an outcome read at `partition`/`offset`."""
        error = outcome.error
        return cls(
            job_id=outcome.job_id,
            task=outcome.task,
            state=outcome.state,
            attempts=outcome.attempts,
            started_at_ms=outcome.started_at_ms,
            finished_at_ms=outcome.finished_at_ms,
            written_at_ms=written_at_ms,
            partition=partition,
            offset=offset,
            value=_value_text(outcome) if outcome.state == "succeeded" else None,
            error_type=None if error is None else error.type,
            error_message=None if error is None else error.message,
            traceback=None if error is None else error.traceback,
        )

    def as_dict(self) -> dict[str, object]:
        """The row for the JSON endpoint."""
        return {
            "job_id": self.job_id,
            "task": self.task,
            "state": self.state,
            "attempts": self.attempts,
            "started_at_ms": self.started_at_ms or None,
            "finished_at_ms": self.finished_at_ms or None,
            "duration_ms": self.duration_ms,
            "written_at_ms": self.written_at_ms,
            "partition": self.partition,
            "offset": self.offset,
            "value": self.value,
            "error": None
            if self.error_type is None
            else {
                "type": self.error_type,
                "message": self.error_message,
                "traceback": self.traceback,
            },
        }


@dataclass(frozen=True, slots=True)
class RecentResults:
    """What one read of the results topic's tail found."""

    topic: str
    by_task: dict[str, list[ResultRow]] = field(default_factory=dict)
    """Rows per task (tasks sorted by name), newest first, at most `PER_TASK` each."""
    records: int = 0
    complete: bool = True
    """False when some partition's end was not reached within the read's timeout."""
    error: str | None = None
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        """The JSON endpoint's body."""
        return {
            "topic": self.topic,
            "at": self.at,
            "records": self.records,
            "complete": self.complete,
            "error": self.error,
            "tasks": {task: [r.as_dict() for r in rows] for task, rows in self.by_task.items()},
        }


def read_recent(
    app: App,
    per_partition: int = PER_PARTITION,
    per_task: int = PER_TASK,
    timeout: float = 10.0,
) -> RecentResults:
    """Read the last `per_partition` records of each partition of the app's results topic."""
    topic = app.settings.results_topic
    client = Client(
        {
            **app.settings.consumer_settings(f"kafka-jobs-web-results-{uuid.uuid4().hex}"),
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = client.partitions_of(topic, timeout=min(timeout, 10.0))
        if partitions is None:
            return RecentResults(topic, error=f"no results topic {topic!r} yet")
        starts: dict[Key, int] = {}
        for partition in partitions:
            low, high = client.watermarks((topic, partition), timeout=timeout)
            starts[(topic, partition)] = max(low, high - per_partition)
        tails, complete = _read_tails(client, starts, per_partition, timeout)
    finally:
        client.close()
    rows = _fold(message for tail in tails.values() for message in tail)
    return RecentResults(
        topic,
        by_task=_by_task(rows, per_task),
        records=sum(len(tail) for tail in tails.values()),
        complete=complete,
    )


def _read_tails(
    client: Client, starts: dict[Key, int], per_partition: int, timeout: float
) -> tuple[dict[int, deque[Message]], bool]:
    """The last records of each partition from its start; and whether every end was reached."""
    client.assign(starts)
    tails: dict[int, deque[Message]] = {p: deque(maxlen=per_partition) for _, p in starts}
    waiting = set(tails)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for message in client.poll_eager(500, 0.2):
            partition = message.partition() or 0
            error = message.error()
            if error is None:
                tails[partition].append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                waiting.discard(partition)
            else:
                log.warning("reading the results topic: %s", error)
    return tails, not waiting


def _fold(messages: Iterable[Message]) -> list[ResultRow]:
    """One row per job: its first final outcome, else its latest state; none after a tombstone."""
    rows: dict[str, ResultRow] = {}
    ordered = sorted(messages, key=lambda m: (m.partition() or 0, m.offset() or 0))
    for message in ordered:
        raw = message.value()
        if not raw:  # a tombstone: the key's outcome is deleted
            key = message.key()
            if key is not None:
                rows.pop(key.decode(errors="replace"), None)
            continue
        try:
            outcome = Outcome.decode(raw)
        except ValueError:
            continue  # not an outcome: the reader of handles skips it too
        known = rows.get(outcome.job_id)
        if known is not None and known.state in FINAL_STATES:
            continue  # a re-run (at-least-once) does not replace the first final outcome
        rows[outcome.job_id] = ResultRow.of(
            outcome, message.partition() or 0, message.offset() or 0, message.timestamp()[1]
        )
    return list(rows.values())


def _by_task(rows: list[ResultRow], per_task: int) -> dict[str, list[ResultRow]]:
    grouped: dict[str, list[ResultRow]] = {}
    newest_first = sorted(
        rows, key=lambda r: (r.written_at_ms, r.partition, r.offset), reverse=True
    )
    for row in newest_first:
        listed = grouped.setdefault(row.task, [])
        if len(listed) < per_task:
            listed.append(row)
    return dict(sorted(grouped.items()))


def _value_text(outcome: Outcome) -> str:
    if outcome.pickled is not None:
        return "(dill pickle)"  # never unpickled here
    text = json.dumps(outcome.value, ensure_ascii=False)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


class RecentResultsCache:
    """Shares one read among the requests of `max_age` seconds. Thread-safe."""

    def __init__(self, app: App, max_age: float = 2.0) -> None:
        self.app = app
        self.max_age = max_age
        self._lock = threading.Lock()
        self._latest: RecentResults | None = None

    def get(self) -> RecentResults:
        """A read at most `max_age` old; a failed read is shown as its error."""
        with self._lock:  # concurrent requests wait for one read instead of each reading
            latest = self._latest
            if latest is not None and time.time() - latest.at < self.max_age:
                return latest
            try:
                latest = read_recent(self.app)
            except Exception as exc:  # the broker away: say so on the page
                log.warning("dashboard could not read the results topic: %s", exc)
                latest = RecentResults(self.app.settings.results_topic, error=str(exc))
            self._latest = latest
            return latest
