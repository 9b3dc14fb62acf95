"""A tiny Celery app for the benchmark: one no-op task that counts its runs into a file.

Configured from the environment so that `celery -A bench.celery_app worker` and the
enqueueing benchmark process see the same app:

- ``BENCH_CELERY_BROKER``: broker URL, e.g. ``confluentkafka://127.0.0.1:9092``,
  ``kafkajobs://127.0.0.1:9092`` (this project's transport, `celery_bridge`) or
  ``redis://127.0.0.1:6379/0``
- ``BENCH_CELERY_QUEUE``: the queue (Kafka topic) the task is routed to
- ``BENCH_CELERY_TARGET``: how many runs complete the measurement (0: never)
- ``BENCH_CELERY_COUNTER_FILE``: where the worker writes its progress as JSON
- ``BENCH_CELERY_TRANSPORT_OPTIONS``: JSON object merged into `broker_transport_options`
  (e.g. ``{"polling_interval": 0.01}``); default: kombu's defaults
- ``BENCH_CELERY_SLEEP``: seconds each job sleeps before it counts (default 0: a no-op)
- ``BENCH_CELERY_MARK``: a count whose time is recorded as ``mark`` (default 0: none)

The counter file holds ``{"count", "first", "last", "first_wall", "first_start", "mark"}``:
`first` and `last` are `time.perf_counter()` readings of the worker process when the
first and the latest counted job ran, `first_wall` is `time.time()` of the first job,
`first_start` the `time.perf_counter()` reading when the first job began (before its
sleep), `mark` the reading when the count reached ``BENCH_CELERY_MARK`` (0.0 before).

`make_app()` builds another app with the same task for a given broker and queue (used
by benchmarks that enqueue to several brokers from one process).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "confluentkafka://127.0.0.1:9092")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")
TARGET = int(os.environ.get("BENCH_CELERY_TARGET", "0"))
COUNTER_FILE = os.environ.get("BENCH_CELERY_COUNTER_FILE", "")
TRANSPORT_OPTIONS: dict[str, Any] = json.loads(
    os.environ.get("BENCH_CELERY_TRANSPORT_OPTIONS", "{}")
)
SLEEP = float(os.environ.get("BENCH_CELERY_SLEEP", "0") or 0)
MARK = int(os.environ.get("BENCH_CELERY_MARK", "0") or 0)

# Same group timeouts as the kafka-jobs and raw consumers of the benchmark.
GROUP_CONFIG: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def configure(celery_app: Celery, queue: str, transport_options: dict[str, Any]) -> None:
    """The benchmark's settings: `queue` as the default queue, no results, no events."""
    celery_app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        # The kafka transport has no fanout exchanges: no pidbox, no events.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"kafka_consumer_config": GROUP_CONFIG, **transport_options},
    )


app = Celery("bench", broker=BROKER_URL)
configure(app, QUEUE, TRANSPORT_OPTIONS)


class _Counter:
    """Counts runs across worker threads; a daemon thread writes progress to `COUNTER_FILE`."""

    def __init__(self, target: int, path: str) -> None:
        self.target = target
        self.path = path
        self._lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.first_wall = 0.0
        self.first_start = 0.0
        self.mark = 0.0
        self._changed = threading.Event()
        if path:
            threading.Thread(target=self._writer, name="bench-counter", daemon=True).start()

    def begin(self) -> None:
        """A job begins: note when the first one did."""
        if not self.first_start:
            now = time.perf_counter()
            with self._lock:
                self.first_start = self.first_start or now

    def hit(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.count += 1
            self.last = now
            if self.count == 1:
                self.first = now
                self.first_wall = time.time()
            if self.count == MARK:
                self.mark = now
        self._changed.set()

    def _writer(self) -> None:
        written = -1
        while True:
            self._changed.wait(0.1)
            self._changed.clear()
            with self._lock:
                count, last = self.count, self.last
            if count != written:
                written = count
                self._write(count, last)
            if self.target and count < self.target:
                time.sleep(0.05)  # at most ~20 writes per second, but the last one at once

    def _write(self, count: int, last: float) -> None:
        data = {
            "count": count,
            "first": self.first,
            "last": last,
            "first_wall": self.first_wall,
            "first_start": self.first_start,
            "mark": self.mark,
        }
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path)


_counter = _Counter(TARGET, COUNTER_FILE)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(i: int, key: str) -> None:
    """The benchmark's job: a no-op, or a `BENCH_CELERY_SLEEP` sleep."""
    _counter.begin()
    if SLEEP > 0:
        time.sleep(SLEEP)
    _counter.hit()


def make_app(
    broker_url: str, queue: str, transport_options: dict[str, Any] | None = None
) -> tuple[Celery, Any]:
    """Another app (not the current one) on `broker_url`, and its `bench.noop` task.

    `.delay()` on the task sends to `queue`; the worker side is still the module's `app`
    (configured from the environment). Close the app when done.
    """
    other = Celery("bench", broker=broker_url, set_as_current=False)
    configure(other, queue, transport_options or {})
    task = other.task(name="bench.noop", shared=False)(noop.run)
    return other, task
