"""One log line per interval about a running worker, instead of a line per job.

    summary: 1,234 jobs in 30s (41.1/s), 2 failed, 1 retried, 0 dead-lettered;
    lag 345 on 6 partitions; 3/4 threads busy; 1 partition paused

`kafka-jobs worker` logs it every `summary_interval` seconds (0 turns it off).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka_jobs.instrumentation.metrics import Metrics
    from kafka_jobs.worker.runner import Worker

log = logging.getLogger("kafka_jobs.summary")


class SummaryLine:
    """Logs the change of the worker's counters every `interval` seconds (daemon thread)."""

    def __init__(self, worker: Worker, metrics: Metrics, interval: float) -> None:
        self.worker = worker
        self.metrics = metrics
        self.interval = interval
        self._last = metrics.totals()
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-jobs-summary", daemon=True)

    def start(self) -> SummaryLine:
        """Start logging."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Log a last line and stop."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()
        self.emit()

    def emit(self) -> str:
        """Log the line for the time since the last one, and start a new interval."""
        now, totals = time.monotonic(), self.metrics.totals()
        counts = {name: totals[name] - self._last.get(name, 0) for name in totals}
        elapsed = now - self._since
        self._last, self._since = totals, now
        line = self.format(counts, elapsed)
        log.info("summary: %s", line, extra={"group": self.worker.group_id})
        return line

    def format(self, counts: dict[str, int], elapsed: float) -> str:
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
