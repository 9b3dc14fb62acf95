"""Worker metrics: Prometheus endpoint and Python counters agree with what actually ran."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from kafka_jobs.broker import free_port
from kafka_jobs.instrumentation.metrics import Metrics
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_endpoint_counts_match_the_ledger(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group, port = new_topic(partitions=3), new_group(), free_port()
    worker = start_worker(
        kafka_broker, topic, group, tmp_path, extra_args=("--metrics-port", str(port))
    )
    try:
        enqueue_ledger_jobs(ledger_producer(topic), 300)
        assert wait_until(lambda: len(ledger.executions(tmp_path)) >= 300, timeout=60)
        text = scrape(port)
    finally:
        assert stop(worker) == 0
    found = re.search(r'kafka_jobs_jobs_succeeded_total\{task="ledger.record"\} (\S+)', text)
    assert found, text
    assert float(found.group(1)) == len(ledger.executions(tmp_path))
    assert "kafka_jobs_job_duration_seconds_bucket" in text
    assert "kafka_jobs_threads_busy" in text


def test_python_counters_follow_the_jobs(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    ran: list[int] = []

    @app.job(retries=1, backoff=0.05)
    def step(n: int) -> None:
        ran.append(n)
        if n == 3:
            raise ValueError("always")

    for n in range(5):
        step.delay(n)
    app.flush(10)
    worker = app.worker()
    metrics = Metrics.attach(app, worker)
    with worker:
        assert wait_until(  # job 4 runs after job 3's dead letter: wait for both
            lambda: (
                metrics.snapshot()["dead_lettered"].get(step.name) == 1
                and metrics.snapshot()["succeeded"].get(step.name) == 4
            ),
            timeout=30,
        )
        snapshot = metrics.snapshot()
    assert snapshot["started"][step.name] == 6
    assert snapshot["succeeded"][step.name] == 4
    assert snapshot["failed"][step.name] == 2
    assert snapshot["retried"][step.name] == 1
    assert snapshot["duration"]["count"] == 6
    assert snapshot["rebalances"] >= 1


def test_lag_per_partition_follows_the_backlog(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, batch_size=1, commit_interval=0.2)
    ran: list[int] = []

    @app.job
    def slow(n: int) -> None:
        time.sleep(0.05)
        ran.append(n)

    for n in range(60):  # one record per produce request: the broker's end offset is exact
        slow.delay(n).wait(10)
    worker = app.worker()
    metrics = Metrics.attach(app, worker)
    seen: list[int] = []
    with worker:

        def lag_seen() -> bool:
            seen.append(metrics.lag().get((topic, 0), -1))
            return max(seen) >= 20

        assert wait_until(lag_seen, timeout=30), f"lag never showed the backlog: {seen[-5:]}"
        assert wait_until(lambda: len(ran) == 60, timeout=60)
        assert wait_until(lambda: metrics.lag().get((topic, 0)) == 0, timeout=10)
        assert "kafka_jobs_partition_lag" in "".join(family.name for family in metrics.collect())
