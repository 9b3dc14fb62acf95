"""Counts of jobs not started or held: metrics count them by event name, status shows them."""

from __future__ import annotations

from kafka_jobs.instrumentation.events import Event
from kafka_jobs.instrumentation.metrics import Metrics
from kafka_jobs.instrumentation.status import control_counts, describe_control_counts


def test_each_event_is_counted_per_task_or_per_topic() -> None:
    metrics = Metrics()
    for name, payload in [
        ("job.expired", {"task": "a"}),
        ("job.revoked", {"task": "a"}),
        ("job.revoked", {"task": "b"}),
        ("job.time_limited", {"task": "b", "limit": 1.0}),
        ("job.rate_limited", {"task": "a", "delay": 0.1}),
        ("job.rate_limited", {"task": "a", "delay": 0.1}),
        ("partition.throttled", {"topic": "t", "partition": 0}),
        ("partition.throttled", {"topic": "u", "partition": 1}),
        ("partition.throttled", {"topic": "t", "partition": 1}),
    ]:
        metrics.observe(Event(name, payload))
    totals = metrics.totals()
    assert control_counts(totals) == {
        "expired": 1,
        "revoked": 2,
        "time_limited": 1,
        "rate_limited": 2,
        "throttled": 3,
    }
    snapshot = metrics.snapshot()
    assert snapshot["revoked"] == {"a": 1, "b": 1}
    assert snapshot["time_limited"] == {"b": 1}
    assert snapshot["throttled"] == {"t": 2, "u": 1}


def test_states_from_before_the_counts_show_zeros() -> None:
    assert control_counts({"succeeded": 4}) == dict.fromkeys(control_counts({}), 0)
    assert describe_control_counts({"revoked": 1200}) == (
        "expired 0, revoked 1,200, time-limited 0, rate-limited 0, throttled 0"
    )
