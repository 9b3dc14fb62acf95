"""One log line per interval about a running worker, instead of a line per job.

    summary: 1,234 jobs in 30s (41.1/s), 2 failed, 1 retried, 0 dead-lettered;
    lag 345 on 6 partitions; 3/4 threads busy; 1 partition paused

`kafka-jobs worker` logs it every `summary_interval` seconds (0 turns it off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from kafka_jobs.events import Event

if TYPE_CHECKING:
    from kafka_jobs.worker.runner import Worker

log = logging.getLogger("kafka_jobs.summary")

_COUNTED = {
    "job.succeeded": "succeeded",
    "job.failed": "failed",
    "job.retrying": "retried",
    "job.dead_lettered": "dead_lettered",
    "record.rejected": "rejected",
}


class SummaryLine:
    """Counts outcomes from the event bus and logs them every `interval` seconds."""

    def __init__(self, worker: Worker, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-jobs-summary", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> SummaryLine:
        """Subscribe to the worker's events and start logging."""
        self._unsubscribe = self.worker.app.events.subscribe(self._observe)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Log a last line and stop."""
        self._stop.set()
        self._thread.join(5)
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _observe(self, event: Event) -> None:
        name = _COUNTED.get(event.name)
        if name is not None:
            with self._lock:
                self._counts[name] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()
        self.emit()

    def emit(self) -> str:
        """Log the line for the time since the last one, and start a new interval."""
        now = time.monotonic()
        with self._lock:
            counts, self._counts = self._counts, Counter()
            elapsed, self._since = now - self._since, now
        line = self.format(counts, elapsed)
        log.info("summary: %s", line, extra={"group": self.worker.group_id})
        return line

    def format(self, counts: Counter[str], elapsed: float) -> str:
        """The summary text for these counts over `elapsed` seconds."""
        done = counts["succeeded"] + counts["dead_lettered"]
        rate = done / elapsed if elapsed > 0 else 0.0
        lag = self.worker.lag()
        stats = self.worker.queue.statistics
        paused = sum(1 for report in self.worker.report() if report.paused)
        parts = [
            f"{done:,} jobs in {elapsed:.0f}s ({rate:,.1f}/s), {counts['failed']} failed,"
            f" {counts['retried']} retried, {counts['dead_lettered']} dead-lettered",
            f"lag {sum(lag.values()):,} on {len(lag)} partition{'s' * (len(lag) != 1)}",
            f"{stats['busy']}/{self.worker.concurrency} threads busy",
        ]
        if counts["rejected"]:
            parts[0] += f", {counts['rejected']} rejected"
        if paused:
            parts.append(f"{paused} partition{'s' * (paused != 1)} paused")
        return "; ".join(parts)
