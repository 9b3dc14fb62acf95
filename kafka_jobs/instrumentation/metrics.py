"""Worker metrics: counters fed by the event bus, readable from Python and by Prometheus.

    metrics = Metrics.attach(app)            # before the worker starts
    metrics.snapshot()                       # {"succeeded": {"task": n}, ...}
    metrics.serve(9102)                      # Prometheus format (needs prometheus_client)

Counters per task: started, succeeded, failed, retried, dead_lettered, and jobs not
started or held: expired, revoked, time_limited (ended by a time limit),
rate_limited (held for a rate-limit token; counted per hold); per topic: rejected
records, throttled (partition pauses of topic throttling); rebalances; a
histogram of job durations. Gauges read live from
a worker when one is given: jobs queued, threads busy, paused partitions, and the
lag of each owned partition (librdkafka's statistics, refreshed every second).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kafka_jobs.instrumentation.events import Event
from kafka_jobs.wire import JSON

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from kafka_jobs.app import App
    from kafka_jobs.worker.runner import Worker

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, float("inf"))

_COUNTED = {
    "job.started": "started",
    "job.succeeded": "succeeded",
    "job.failed": "failed",
    "job.retrying": "retried",
    "job.dead_lettered": "dead_lettered",
    "job.expired": "expired",
    "job.revoked": "revoked",
    "job.time_limited": "time_limited",
    "job.rate_limited": "rate_limited",
}
_PER_TOPIC = {"record.rejected": "rejected", "partition.throttled": "throttled"}


class Metrics:
    """Thread-safe counters updated from events (subscriber: must stay cheap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_task: dict[str, Counter[str]] = {name: Counter() for name in _COUNTED.values()}
        self.rejected: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.rebalances = 0
        self.duration_buckets = [0] * len(BUCKETS)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.worker: Worker | None = None

    @classmethod
    def attach(cls, app: App, worker: Worker | None = None) -> Metrics:
        """Metrics subscribed to `app`'s events (and reading `worker`'s gauges)."""
        metrics = cls()
        metrics.worker = worker
        app.events.subscribe(metrics.observe)
        return metrics

    def observe(self, event: Event) -> None:
        """Event-bus subscriber."""
        name = event.name
        with self._lock:
            counter = _COUNTED.get(name)
            if counter is not None:
                self.by_task[counter][str(event.payload.get("task"))] += 1
                if name in ("job.succeeded", "job.failed"):
                    duration = float(event.payload.get("duration", 0.0))
                    self.duration_sum += duration
                    self.duration_count += 1
                    for index, bound in enumerate(BUCKETS):
                        if duration <= bound:
                            self.duration_buckets[index] += 1
            elif name in _PER_TOPIC:
                counts = self.rejected if name == "record.rejected" else self.throttled
                counts[str(event.payload.get("topic"))] += 1
            elif name in ("partitions.revoked", "partitions.lost", "partitions.assigned"):
                self.rebalances += name == "partitions.assigned"

    def gauges(self) -> dict[str, int]:
        """Live worker state: queued jobs, busy threads, paused partitions."""
        worker = self.worker
        if worker is None:
            return {}
        stats = worker.queue.statistics
        paused = sum(1 for report in worker.report() if report.paused)
        return {
            "jobs_queued": stats["enqueued"] + stats["waiting"],
            "threads_busy": stats["busy"],
            "partitions_paused": paused,
        }

    def totals(self) -> dict[str, int]:
        """Each counter summed over tasks (`rejected`, `throttled` over topics), since attached."""
        with self._lock:
            totals = {name: sum(counts.values()) for name, counts in self.by_task.items()}
            totals["rejected"] = sum(self.rejected.values())
            totals["throttled"] = sum(self.throttled.values())
        return totals

    def lag(self) -> dict[tuple[str, int], int]:
        """Lag per owned partition (end offset minus committed), as last reported."""
        return self.worker.lag() if self.worker is not None else {}

    def snapshot(self) -> dict[str, JSON]:
        """Every counter and gauge as plain data."""
        with self._lock:
            data: dict[str, JSON] = {name: dict(counts) for name, counts in self.by_task.items()}
            data["rejected"] = dict(self.rejected)
            data["throttled"] = dict(self.throttled)
            data["rebalances"] = self.rebalances
            data["duration"] = {"count": self.duration_count, "sum": self.duration_sum}
        data.update(self.gauges())
        data["lag"] = {f"{topic}[{partition}]": n for (topic, partition), n in self.lag().items()}
        return data

    def collect(self) -> Iterator[Metric]:
        """prometheus_client custom-collector protocol."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            for name, counts in self.by_task.items():
                family = CounterMetricFamily(
                    f"kafka_jobs_jobs_{name}", f"Jobs {name.replace('_', ' ')}", labels=["task"]
                )
                for task, value in counts.items():
                    family.add_metric([task], value)
                yield family
            rejected = CounterMetricFamily(
                "kafka_jobs_records_rejected", "Records that could not run", labels=["topic"]
            )
            for topic, value in self.rejected.items():
                rejected.add_metric([topic], value)
            yield rejected
            throttled = CounterMetricFamily(
                "kafka_jobs_partitions_throttled",
                "Partition pauses of topic throttling",
                labels=["topic"],
            )
            for topic, value in self.throttled.items():
                throttled.add_metric([topic], value)
            yield throttled
            yield CounterMetricFamily(
                "kafka_jobs_rebalances", "Partition assignments received", value=self.rebalances
            )
            cumulative = []
            for bound, count in zip(BUCKETS, self.duration_buckets, strict=True):
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), count))
            yield HistogramMetricFamily(
                "kafka_jobs_job_duration_seconds",
                "Job run time",
                buckets=cumulative,
                sum_value=self.duration_sum,
            )
        for name, value in self.gauges().items():
            yield GaugeMetricFamily(f"kafka_jobs_{name}", name.replace("_", " "), value=value)
        lag = GaugeMetricFamily(
            "kafka_jobs_partition_lag", "Records not consumed yet", labels=["topic", "partition"]
        )
        for (topic, partition), value in self.lag().items():
            lag.add_metric([topic, str(partition)], value)
        yield lag

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose the metrics for Prometheus on http://host:port/metrics (daemon thread)."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(self)
        start_http_server(port, addr=host, registry=registry)
