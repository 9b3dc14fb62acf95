"""A running worker's state, published to a compacted topic; read by `status` and the dashboard.

Every `status_interval` seconds a worker run by `Worker.run()` writes one JSON
record keyed ``<group>/<host>/<pid>`` to `status_topic` (compacted, so the topic
holds the latest state per worker), and a tombstone when it stops cleanly. A
worker killed without one simply goes stale: readers drop states older than
three intervals. So the operator tools need only the broker.

Value (version 1): group, host, pid, started_at / at (ms since the epoch),
interval (s), concurrency, pool, busy, queued, totals (succeeded, failed,
retried, dead_lettered, rejected, and expired, revoked, time_limited,
rate_limited, throttled since start), jobs_per_second (over the last
interval), partitions: list of {topic, partition, paused, committed,
jobs_running, lag}, recent_failures: the last `RECENT_FAILURES` job failures
({at, task, job_id, topic, partition, offset, attempt, error, message,
traceback}), retrying: records waiting for a retry ({due, task, job_id, topic,
partition, offset, attempt, error}).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, TypedDict, cast

from confluent_kafka import OFFSET_BEGINNING, KafkaException

from kafka_jobs.connection.client import Client
from kafka_jobs.deadletter import format_traceback
from kafka_jobs.instrumentation.events import Event

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.instrumentation.metrics import Metrics
    from kafka_jobs.worker.runner import Worker

log = logging.getLogger("kafka_jobs.worker")

VERSION = 1
STALE_AFTER = 3
"""A state older than this many of its intervals is a worker that is gone."""
RECENT_FAILURES = 20
MAX_RETRYING = 100
_TRACEBACK_CHARS = 4000


class PartitionEntry(TypedDict):
    """One owned partition in a worker state."""

    topic: str
    partition: int
    paused: bool
    committed: int | None
    jobs_running: int
    lag: int | None


class _Coordinates(TypedDict):
    """Where a failed or retrying job came from (task, job id and attempt as its events gave)."""

    task: str | None
    job_id: str | None
    topic: str
    partition: int
    offset: int
    attempt: int | None


class FailureEntry(_Coordinates):
    """A recent job failure in a worker state (`at`: ms since the epoch)."""

    at: int
    error: str
    message: str
    traceback: str


class RetryEntry(_Coordinates):
    """A record waiting for its retry in a worker state (`due`: ms since the epoch)."""

    due: int
    error: str | None


class WorkerState(TypedDict):
    """The value of a worker's status record (version 1; see the module's docstring)."""

    version: int
    group: str
    host: str
    pid: int
    started_at: int
    at: int
    interval: float
    concurrency: int
    pool: str
    busy: int
    queued: int
    totals: dict[str, int]
    jobs_per_second: float
    partitions: list[PartitionEntry]
    recent_failures: list[FailureEntry]
    retrying: list[RetryEntry]


def worker_key(group: str, host: str, pid: int) -> str:
    """The record key of one worker's state."""
    return f"{group}/{host}/{pid}"


class StatePublisher:
    """Publishes a worker's state every `interval` seconds (daemon thread)."""

    def __init__(self, worker: Worker, metrics: Metrics, interval: float) -> None:
        self.worker = worker
        self.metrics = metrics
        self.interval = interval
        self.topic = worker.settings.status_topic
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.key = worker_key(worker.group_id, self.host, self.pid).encode()
        self.started_at = int(time.time() * 1000)
        self._last = (time.monotonic(), 0)
        self._lock = threading.Lock()
        self._failures: deque[FailureEntry] = deque(maxlen=RECENT_FAILURES)
        self._retrying: dict[tuple[str, int, int], RetryEntry] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-jobs-state", daemon=True)
        self._unsubscribe = worker.app.events.subscribe(self._observe)

    def start(self) -> StatePublisher:
        """Create the topic if missing (compacted) and start publishing."""
        try:
            self.worker.app.create_topics(
                [self.topic], partitions=1, config={"cleanup.policy": "compact"}
            )
        except Exception as exc:  # the first write says it again if this matters
            log.warning("could not create the status topic %s: %s", self.topic, exc)
        self._thread.start()
        return self

    def _observe(self, event: Event) -> None:
        """Event-bus subscriber: keeps recent failures and the retries waiting."""
        name, data = event.name, event.payload
        if name in ("job.succeeded", "job.dead_lettered"):
            if self._retrying:  # a retry that ended; most jobs never retried
                where = (str(data["topic"]), int(data["partition"]), int(data["offset"]))
                with self._lock:
                    self._retrying.pop(where, None)
            return
        if name not in ("job.failed", "job.retrying"):
            return
        where = (str(data["topic"]), int(data["partition"]), int(data["offset"]))
        coordinates: _Coordinates = {
            "task": data.get("task"),
            "job_id": data.get("job_id"),
            "topic": where[0],
            "partition": where[1],
            "offset": where[2],
            "attempt": data.get("attempt"),
        }
        with self._lock:
            if name == "job.failed":
                error = data["error"]
                self._failures.append(
                    {
                        "at": int(time.time() * 1000),
                        **coordinates,
                        "error": f"{type(error).__module__}.{type(error).__qualname__}",
                        "message": str(error)[:1000],
                        "traceback": format_traceback(error)[-_TRACEBACK_CHARS:],
                    }
                )
            elif len(self._retrying) < MAX_RETRYING or where in self._retrying:  # retrying
                due = int((time.time() + float(data.get("delay", 0))) * 1000)
                error = data.get("error")
                self._retrying[where] = {
                    "due": due,
                    **coordinates,
                    "error": type(error).__qualname__ if error is not None else None,
                }

    def stop(self) -> None:
        """Stop publishing and leave a tombstone: this worker is gone."""
        self._unsubscribe()
        self._stop.set()
        self._thread.join(5)
        self._send(None)
        try:
            self.worker.app.producer.poll(0)
        except KafkaException as exc:
            log.debug("status tombstone: %s", exc)

    def _run(self) -> None:
        while True:
            try:
                self._send(json.dumps(self.snapshot()).encode())
            except Exception as exc:  # a status record must never take the worker down
                log.warning("could not publish the worker state: %s", exc)
            if self._stop.wait(self.interval):
                return

    def _send(self, value: bytes | None) -> None:
        self.worker.app.producer.produce(self.topic, value, self.key, [])

    def snapshot(self) -> WorkerState:
        """The state as published."""
        worker = self.worker
        totals = self.metrics.totals()
        now = time.monotonic()
        done = totals["succeeded"] + totals["dead_lettered"]
        since, before = self._last
        self._last = (now, done)
        stats = worker.queue.statistics
        lag = worker.lag()
        reports = worker.report()
        owned = {(r.topic, r.partition) for r in reports}
        stale = int((time.time() - 60) * 1000)  # a retry long overdue was settled unseen
        with self._lock:
            failures = list(self._failures)
            for where, entry in list(self._retrying.items()):
                if (where[0], where[1]) not in owned or entry["due"] < stale:
                    del self._retrying[where]
            retrying = list(self._retrying.values())
        return {
            "version": VERSION,
            "group": worker.group_id,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "at": int(time.time() * 1000),
            "interval": self.interval,
            "concurrency": worker.concurrency,
            "pool": worker.settings.pool,
            "busy": stats["busy"],
            "queued": stats["enqueued"] + stats["waiting"],
            "totals": totals,
            "jobs_per_second": round((done - before) / max(now - since, 1e-6), 2),
            "partitions": [
                {
                    "topic": report.topic,
                    "partition": report.partition,
                    "paused": report.paused,
                    "committed": report.committed,
                    "jobs_running": report.jobs_running,
                    "lag": lag.get((report.topic, report.partition)),
                }
                for report in reports
            ],
            "recent_failures": failures,
            "retrying": sorted(retrying, key=lambda r: r["due"]),
        }


def read_states(app: App, timeout: float = 10.0) -> list[WorkerState]:
    """The latest state of every live worker, from the status topic, by group and start."""
    topic = app.settings.status_topic
    consumer = Client(
        {
            **app.settings.consumer_settings(f"kafka-jobs-state-{uuid.uuid4().hex}"),
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.partitions_of(topic, timeout)
        if partitions is None:
            return []
        ends: dict[int, int] = {}
        for partition in partitions:
            low, high = consumer.watermarks((topic, partition), timeout)
            if high > low:
                ends[partition] = high
        consumer.assign({(topic, p): OFFSET_BEGINNING for p in ends})
        latest: dict[bytes, WorkerState | None] = {}
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for record in consumer.poll(500, 0.5):
                error = record.error()
                partition = int(record.partition() or 0)
                if error is None:
                    key = record.key() or b""
                    latest[key] = _parse(record.value())
                    if int(record.offset() or 0) + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
                elif error.code() == error._PARTITION_EOF:
                    ends.pop(partition, None)
    finally:
        consumer.close()
    now_ms = time.time() * 1000
    live = [
        state
        for state in latest.values()
        if state is not None
        and now_ms - state.get("at", 0) <= STALE_AFTER * state.get("interval", 5) * 1000
    ]
    return sorted(live, key=lambda state: (state["group"], state["started_at"]))


def _parse(value: bytes | None) -> WorkerState | None:
    if value is None:
        return None
    try:
        state: object = json.loads(value)
    except ValueError:
        return None
    if isinstance(state, dict) and state.get("version") == VERSION:
        return cast(WorkerState, state)  # written by `snapshot()` of this version
    return None
