"""Chains, groups and chords over the real broker: values, order, failures, one callback."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

import kafka_jobs
from kafka_jobs import App, Event, chain, chord, group
from kafka_jobs.canvas.worker import JOIN_TASK
from kafka_jobs.testing import unique_name, wait_until


class Succeeded:
    """Counts `job.succeeded` events per task (only to wait for work to be over)."""

    def __init__(self, app: App) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        app.events.subscribe(self._take)

    def _take(self, event: Event) -> None:
        if event.name == "job.succeeded":
            with self._lock:
                self.counts[str(event.payload["task"])] += 1

    def __getitem__(self, task: str) -> int:
        with self._lock:
            return self.counts[task]


def _app(kafka_app: Any, new_topic: Any, partitions: int = 3) -> App:
    return kafka_app(
        default_topic=new_topic(partitions=partitions),
        results_topic=unique_name("results"),
        keep_result=True,
    )


def test_a_chain_passes_each_value_on_as_the_next_first_argument(kafka_app, new_topic) -> None:
    app = _app(kafka_app, new_topic)

    @app.job
    def add(x: int, y: int) -> int:
        return x + y

    @app.job
    def mul(x: int, y: int) -> int:
        return x * y

    @app.job
    def constant(x: int) -> int:
        return x

    @app.job
    async def async_add(x: int, y: int) -> int:
        return x + y

    with app.worker(concurrency=2):
        handle = chain(add.s(1, 2), mul.s(10), add.s(5)).delay()
        assert handle.get(timeout=30) == 35
        assert [step.get(timeout=10) for step in handle.steps] == [3, 30, 35]
        # Arguments given to delay() go to the first step; si() takes no value.
        other = chain(add.s(2), constant.si(7), mul.s(3)).delay(40)
        assert other.get(timeout=30) == 21
        assert [step.get(timeout=10) for step in other.steps] == [42, 7, 21]
        assert kafka_jobs.result(other.id, app).get(timeout=10) == 21
        # An async step goes on from the event loop like a sync one.
        assert chain(async_add.s(1, 1), mul.s(5), async_add.s(1)).delay().get(timeout=30) == 11


def test_a_failed_step_stops_the_chain_and_its_handle_raises(kafka_app, new_topic) -> None:
    app = _app(kafka_app, new_topic, partitions=1)  # one partition: jobs run in enqueue order
    ran: list[int] = []

    @app.job
    def add(x: int, y: int) -> int:
        return x + y

    @app.job(retries=1, backoff=0.05)
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    @app.job
    def after(x: int) -> int:
        ran.append(x)
        return x

    with app.worker(concurrency=2):
        handle = chain(add.s(1, 1), boom.s(), after.s(), after.s()).delay()
        with pytest.raises(ValueError, match="bad 2"):
            handle.get(timeout=30)
        first, failed, third, fourth = handle.steps
        assert first.get(timeout=10) == 2
        assert failed.state == "dead-lettered"
        assert third.state == fourth.state == "failed"
        with pytest.raises(ValueError, match="bad 2"):
            third.get(timeout=10)
        # A job enqueued now runs after anything the failed step could have enqueued.
        assert after.delay(99).get(timeout=30) == 99
    assert ran == [99]


def test_a_group_returns_values_in_the_order_given(kafka_app, new_topic) -> None:
    app = _app(kafka_app, new_topic)

    @app.job(key="n")
    def slow_square(n: int) -> int:
        time.sleep(0.05 * (5 - n))  # later members finish first
        return n * n

    @app.job
    def picky(n: int) -> int:
        if n in (2, 4):
            raise KeyError(f"no {n}")
        return n

    with app.worker(concurrency=4):
        handle = group(slow_square.s(n) for n in range(6)).delay()
        assert handle.get(timeout=30) == [0, 1, 4, 9, 16, 25]
        assert handle.ready()
        failing = group([picky.s(n) for n in range(6)]).delay()
        with pytest.raises(KeyError, match="no 2"):
            failing.get(timeout=30)
        assert group().delay().get(timeout=1) == []


def _drain(task: Any, succeeded: Succeeded, joins: int) -> None:
    """Wait for `joins` joins, then for a job queued behind anything they enqueued."""
    assert wait_until(lambda: succeeded[JOIN_TASK] >= joins, timeout=60), succeeded.counts
    assert task.delay(-1).get(timeout=30) == -1


def test_a_chord_callback_gets_the_values_and_runs_once(kafka_app, new_topic) -> None:
    app = _app(kafka_app, new_topic)
    callback_topic = new_topic(partitions=1)
    succeeded = Succeeded(app)
    calls: list[list[int]] = []

    @app.job(key="n")
    def square(n: int) -> int:
        return n * n

    @app.job(topic=callback_topic)
    def total(values: list[int] | int) -> int:
        if values == -1:  # a marker: see _drain
            return -1
        assert isinstance(values, list)
        calls.append(values)
        return sum(values)

    with app.worker(concurrency=4):
        handle = chord([square.s(n) for n in range(10)], total.s()).delay()
        assert handle.get(timeout=60) == sum(n * n for n in range(10))
        assert handle.group.get(timeout=10) == [n * n for n in range(10)]
        assert handle.state == "succeeded"
        _drain(total, succeeded, joins=10)
        empty = chord([], total.s()).delay()
        assert empty.get(timeout=30) == 0
    assert calls == [[n * n for n in range(10)], []]


def test_a_failed_member_fails_the_chord_and_the_callback_never_runs(kafka_app, new_topic) -> None:
    app = _app(kafka_app, new_topic)
    callback_topic = new_topic(partitions=1)
    succeeded = Succeeded(app)
    calls: list[object] = []

    @app.job(key="n", retries=0)
    def member(n: int) -> int:
        if n == 3:
            raise ValueError("member 3 broke")
        return n

    @app.job(topic=callback_topic)
    def total(values: list[int] | int) -> int:
        if values == -1:
            return -1
        calls.append(values)
        return 0

    with app.worker(concurrency=4):
        handle = chord([member.s(n) for n in range(6)], total.s()).delay()
        with pytest.raises(ValueError, match="member 3 broke"):
            handle.get(timeout=60)
        assert handle.state == "failed"
        assert handle.group.results[3].state == "dead-lettered"
        _drain(total, succeeded, joins=6)
    assert calls == []
