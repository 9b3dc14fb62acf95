"""Expired, revoked, time-limited, rate-limited and throttled counts: metrics, status, dashboard."""

from __future__ import annotations

import re
import threading
import time

import pytest

from kafka_jobs import SoftTimeLimitExceeded
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

    @app.job(soft_time_limit=0.3)
    def overrun() -> None:
        try:
            for _ in range(400):  # 20 s in small steps: the soft limit comes first
                time.sleep(0.05)
        except SoftTimeLimitExceeded:
            with lock:
                ran.append("cleaned up")

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
    overrun.delay()
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
        assert wait_until(lambda: len(ran) >= 10, timeout=60)
        assert wait_until(lambda: metrics.totals()["expired"] >= 1, timeout=30)
        assert wait_until(lambda: metrics.totals()["revoked"] >= 1, timeout=30)
        assert wait_until(lambda: metrics.totals()["time_limited"] >= 1, timeout=30)
        totals = metrics.totals()
        # 4 starts at 5/s: 3 holds at least (a job may be held more than once).
        assert totals["rate_limited"] >= 3
        assert totals["throttled"] >= 2  # 5 records at 2 per window: 3 windows
        assert totals["expired"] == 1 and totals["revoked"] == 1
        assert "late" not in ran and "revoked" not in ran
        assert totals["time_limited"] == 1 and "cleaned up" in ran

        registry = CollectorRegistry()
        registry.register(metrics)
        text = generate_latest(registry).decode()
        names = (("expired", plain.name), ("revoked", plain.name), ("time_limited", overrun.name))
        for name, task in names:
            assert f'kafka_jobs_jobs_{name}_total{{task="{task}"}} 1.0' in text
        assert _sample(text, "jobs_rate_limited", "task", limited.name) == totals["rate_limited"]
        throttles = _sample(text, "partitions_throttled", "topic", throttled_topic)
        assert throttles == totals["throttled"]

        # The published state (what `kafka-jobs status` and the dashboard read).
        def published() -> dict[str, int]:
            states = [s for s in read_states(app, timeout=5) if s["group"] == app.settings.group_id]
            return control_counts(states[0]["totals"]) if states else {}

        expected = control_counts(metrics.totals())
        assert wait_until(lambda: published() == expected, timeout=30)
        cell = describe_control_counts(expected)
        assert "expired 1, revoked 1, time-limited 1" in cell

        _dashboard_shows(dashboard(app, sample_interval=0.3), app.settings.group_id, expected)
    finally:
        worker.stop()
        worker.join(30)


def _sample(text: str, family: str, label: str, value: str) -> float:
    found = re.search(rf'kafka_jobs_{family}_total\{{{label}="{value}"\}} (\S+)', text)
    assert found, text
    return float(found.group(1))


def _dashboard_shows(client, group: str, expected: dict[str, int]) -> None:
    def shown() -> dict[str, int]:
        view = client.get("/api/overview").get_json()
        groups = [g for g in view["groups"] if g["name"] == group]
        workers = groups[0]["workers"] if groups else []
        return control_counts(workers[0]["totals"]) if workers else {}

    assert wait_until(lambda: shown() == expected, timeout=30)
    page = client.get("/").get_data(as_text=True)
    for header in ("expired", "revoked", "time-limited", "rate-limited", "throttled"):
        assert f"<th>{header}</th>" in page
    for name, count in expected.items():
        assert f'<td class="{name}">{count}</td>' in page
