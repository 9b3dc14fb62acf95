"""Liveness and readiness verdicts from listener state (fakes of the listener)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kafka_jobs.instrumentation.health import Health


@dataclass
class FakeListener:
    since_poll: float = 0.0
    alive: bool = True
    states: dict[tuple[str, int], object] = field(default_factory=dict)

    @property
    def thread(self) -> threading.Thread:
        listener = self

        class Thread(threading.Thread):
            def is_alive(self) -> bool:
                return listener.alive

        return Thread(name="kafka-jobs-listener-g")


def test_live_until_polling_stalls_or_the_loop_ends() -> None:
    listener = FakeListener()
    health = Health([listener], 2.0, lambda: True)
    assert health.live().ok
    listener.since_poll = 2.5
    verdict = health.live()
    assert not verdict.ok and "no poll for 2.5s" in str(verdict.detail["stalled"])
    listener.since_poll, listener.alive = 0.0, False
    assert not health.live().ok


def test_ready_only_when_started_assigned_and_live() -> None:
    listener = FakeListener()
    started = False
    health = Health([listener], 2.0, lambda: started)
    assert not health.ready().ok  # not started
    started = True
    assert not health.ready().ok  # no partitions yet
    listener.states[("t", 0)] = object()
    assert health.ready().ok
    listener.since_poll = 3.0
    assert not health.ready().ok
