"""EventBus: synchronous fan-out; a failing subscriber is logged, never propagated."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading

import pytest

import kafka_jobs.instrumentation.events as events
from kafka_jobs.instrumentation.events import Event, EventBus
from tests import ROOT


def test_subscriber_receives_name_and_payload() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    bus.emit("job.succeeded", topic="t", partition=0, offset=5)
    assert seen == [Event("job.succeeded", {"topic": "t", "partition": 0, "offset": 5})]


def test_events_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Event("a", {}).name = "b"  # type: ignore[misc]


def test_subscribers_run_in_subscription_order_on_the_emitting_thread() -> None:
    bus = EventBus()
    calls: list[tuple[str, str]] = []
    bus.subscribe(lambda e: calls.append(("first", threading.current_thread().name)))
    bus.subscribe(lambda e: calls.append(("second", threading.current_thread().name)))
    bus.emit("x")
    me = threading.current_thread().name
    assert calls == [("first", me), ("second", me)]


def test_emit_without_subscribers_is_a_no_op() -> None:
    bus = EventBus()
    assert not bus.active
    bus.emit("nobody.listens", value=1)


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    bus = EventBus()
    kept: list[str] = []
    dropped: list[str] = []
    bus.subscribe(lambda e: kept.append(e.name))
    unsubscribe = bus.subscribe(lambda e: dropped.append(e.name))
    bus.emit("one")
    unsubscribe()
    unsubscribe()
    bus.emit("two")
    assert kept == ["one", "two"]
    assert dropped == ["one"]


def test_active_follows_subscriptions() -> None:
    bus = EventBus()
    first = bus.subscribe(lambda e: None)
    second = bus.subscribe(lambda e: None)
    assert bus.active
    first()
    assert bus.active
    second()
    assert not bus.active


def test_raising_subscriber_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    before: list[str] = []
    after: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(lambda e: before.append(e.payload["error"]))
    bus.subscribe(broken)
    bus.subscribe(lambda e: after.append(e.payload["error"]))
    with caplog.at_level(logging.ERROR, logger="kafka_jobs.events"):
        bus.emit("job.failed", error="x")
        bus.emit("job.failed", error="y")
    assert before == after == ["x", "y"]
    failures = [r for r in caplog.records if r.name == "kafka_jobs.events"]
    assert len(failures) == 2
    assert "job.failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


def test_unsubscribing_during_emit_does_not_disturb_that_emit() -> None:
    bus = EventBus()
    seen: list[str] = []
    unsubscribe = None

    def once(event: Event) -> None:
        seen.append(f"once {event.name}")
        assert unsubscribe is not None
        unsubscribe()

    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda e: seen.append(f"other {e.name}"))
    bus.emit("a")
    bus.emit("b")
    assert seen == ["once a", "other a", "other b"]


def test_subscribing_during_emit_takes_effect_from_the_next_emit() -> None:
    bus = EventBus()
    seen: list[str] = []

    def add_another(event: Event) -> None:
        if event.name == "a":
            bus.subscribe(lambda e: seen.append(f"late {e.name}"))

    bus.subscribe(add_another)
    bus.emit("a")
    bus.emit("b")
    assert seen == ["late b"]


def test_concurrent_subscribe_and_emit() -> None:
    bus = EventBus()
    counts = [0] * 16
    lock = threading.Lock()

    def subscriber(n: int) -> None:
        def count(event: Event) -> None:
            with lock:
                counts[n] += 1

        bus.subscribe(count)

    threads = [threading.Thread(target=subscriber, args=(n,)) for n in range(16)]
    threads += [threading.Thread(target=lambda: bus.emit("noise")) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    before = list(counts)
    bus.emit("after")
    assert [c - b for c, b in zip(counts, before, strict=True)] == [1] * 16


def test_each_unsubscribe_removes_only_its_own_subscription() -> None:
    bus = EventBus()
    seen: list[str] = []

    def record(event: Event) -> None:
        seen.append(event.name)

    first = bus.subscribe(record)
    bus.subscribe(record)
    first()
    bus.emit("x")
    assert seen == ["x"]


def test_every_emitted_event_name_is_documented() -> None:

    emitted = {
        match.group(1)
        for package in ("kafka_jobs", "celery_bridge")
        for path in (ROOT / package).rglob("*.py")
        for match in re.finditer(r'\.emit\(\s*"([a-z_.]+)"', path.read_text())
    }
    assert len(emitted) > 10  # the scan found the emitters
    documented = set(re.findall(r"``([a-z_.]+)``", events.__doc__ or ""))
    assert emitted <= documented, sorted(emitted - documented)
