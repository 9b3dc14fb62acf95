"""Expired, revoked, rate-limited and throttled counts in metrics, status and the dashboard."""

from __future__ import annotations

import re
import threading
import time

import pytest

from kafka_jobs.instrumentation.publisher import read_states
from kafka_jobs.instrumentation.status import control_counts, describe_control_counts
from kafka_jobs.testing import unique_name, wait_until

pytest.importorskip("prometheus_client")


def test_counts_of_jobs_not_started_or_held_reach_metrics_status_and_the_dashboard(
    kafka_app, new_topic, dashboard
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    topic, throttled_topic = new_topic(), new_topic()
    app = kafka_app(
        default_topic=topic,
        status_topic=unique_name("status"),
        status_interval=0.3,
        summary_interval=0,
        group_id=unique_name("counts-g"),
    )
    app.configure_topic(throttled_topic, throttle=(2, 1.0))
    ran: list[str] = []
    lock = threading.Lock()

    @app.job()
    def plain(name: str) -> None:
        with lock:
            ran.append(name)

    @app.job(rate_limit="5/s")
    def limited(n: int) -> None:
        with lock:
            ran.append(f"limited-{n}")

    @app.job(topic=throttled_topic)
    def paced(n: int) -> None:
        with lock:
            ran.append(f"paced-{n}")

    plain.apply_async(("late",), expires=0.2)
    plain.delay("revoked").revoke()
    for n in range(4):
        limited.delay(n)
    for n in range(5):
        paced.delay(n)
    app.flush(30)
    time.sleep(0.5)  # no worker yet: the first job's expiry passes while it waits
    worker = app.worker(concurrency=2).start()
    worker.start_reporting()
    try:
        metrics = worker.metrics()
        assert wait_until(lambda: len(ran) >= 9, timeout=60)
        assert wait_until(lambda: metrics.totals()["expired"] >= 1, timeout=30)
        assert wait_until(lambda: metrics.totals()["revoked"] >= 1, timeout=30)
        totals = metrics.totals()
        # 4 starts at 5/s: 3 holds at least (a job may be held more than once).
        assert totals["rate_limited"] >= 3
        assert totals["throttled"] >= 2  # 5 records at 2 per window: 3 windows
        assert totals["expired"] == 1 and totals["revoked"] == 1
        assert "late" not in ran and "revoked" not in ran
        assert totals["time_limited"] == 0

        registry = CollectorRegistry()
        registry.register(metrics)
        text = generate_latest(registry).decode()
        for name, task in (("expired", plain.name), ("revoked", plain.name)):
            assert f'kafka_jobs_jobs_{name}_total{{task="{task}"}} 1.0' in text
        found = re.search(
            rf'kafka_jobs_jobs_rate_limited_total\{{task="{limited.name}"\}} (\S+)', text
        )
        assert found and float(found.group(1)) == totals["rate_limited"]
        found = re.search(
            rf'kafka_jobs_partitions_throttled_total\{{topic="{throttled_topic}"\}} (\S+)', text
        )
        assert found and float(found.group(1)) == totals["throttled"]

        # The published state (what `kafka-jobs status` and the dashboard read).
        def published() -> dict[str, int]:
            states = [s for s in read_states(app, timeout=5) if s["group"] == app.settings.group_id]
            return control_counts(states[0]["totals"]) if states else {}

        expected = control_counts(metrics.totals())
        assert wait_until(lambda: published() == expected, timeout=30)
        cell = describe_control_counts(expected)
        assert "expired 1, revoked 1, time-limited 0" in cell

        client = dashboard(app, sample_interval=0.3)

        def shown() -> dict[str, int]:
            view = client.get("/api/overview").get_json()
            groups = [g for g in view["groups"] if g["name"] == app.settings.group_id]
            workers = groups[0]["workers"] if groups else []
            return control_counts(workers[0]["totals"]) if workers else {}

        assert wait_until(lambda: shown() == expected, timeout=30)
        page = client.get("/").get_data(as_text=True)
        for header in ("expired", "revoked", "time-limited", "rate-limited", "throttled"):
            assert f"<th>{header}</th>" in page
        assert f'<td class="rate_limited">{expected["rate_limited"]}</td>' in page
        assert f'<td class="throttled">{expected["throttled"]}</td>' in page
    finally:
        worker.stop()
        worker.join(30)
