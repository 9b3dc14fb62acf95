"""Failure paths of the worker itself: nothing a job or handler throws strands a partition."""

from __future__ import annotations

import threading

from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import BrokerInfo, wait_until
from kafka_jobs.worker import Disposition, Failure, LogFailures


def test_system_exit_in_a_job_is_a_failure_not_a_dead_thread(
    kafka_broker: BrokerInfo, kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    ran: list[int] = []

    @app.job
    def step(n: int) -> None:
        if n == 1:
            raise SystemExit(3)
        ran.append(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    for n in range(4):
        step.delay(n)
    app.flush(10)
    with app.worker(concurrency=1):
        assert wait_until(lambda: ran == [0, 2, 3], timeout=30)
    failed = [e.payload["error"] for e in events if e.name == "job.failed"]
    assert len(failed) == 1 and isinstance(failed[0], SystemExit)
    assert kafka_broker.committed(app.settings.group_id, topic) == 4


class FlakyHandler(LogFailures):
    """Raises the first time it is asked about a failure (a bug in a custom handler)."""

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, failure: Failure) -> Disposition:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("monitoring backend unreachable")
        return super().handle(failure)


def test_a_failing_failure_handler_retries_the_record_and_blocks_only_its_partition(
    kafka_broker: BrokerInfo, kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=2)
    app = kafka_app(default_topic=topic)
    runs: list[tuple[int, str]] = []
    lock = threading.Lock()

    @app.job(key="key")
    def work(n: int, key: str) -> None:
        with lock:
            runs.append((n, key))
        if n == 0:
            raise ValueError("boom")

    kafka_app.allow("failure-handler")  # provoked on purpose
    handler = FlakyHandler()
    internal: list[Event] = []
    app.events.subscribe(lambda e: internal.append(e) if e.name == "worker.error" else None)
    first = work.delay(0, "a").wait(10)
    other_key = next(
        k
        for k in ("b", "c", "d", "e", "f", "g")
        if work.delay(99, k).wait(10).partition != first.partition
    )
    for n in range(1, 4):
        work.delay(n, "a")
    app.flush(10)

    with app.worker(concurrency=2, failure_handler=handler):
        assert wait_until(lambda: len([r for r in runs if r[1] == "a"]) == 4, timeout=30)
    in_order = [n for n, key in runs if key == "a"]
    # Job 0 ran once; its handler failed, so the handler (not the job) was asked
    # again before anything behind it ran.
    assert in_order == [0, 1, 2, 3]
    assert (99, other_key) in runs
    assert handler.calls == 2
    assert [e.payload["where"] for e in internal] == ["failure-handler"]


def test_jobs_enqueued_by_a_job_are_delivered_before_it_counts_as_done(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    children: list[int] = []

    @app.job
    def child(n: int) -> None:
        children.append(n)

    @app.job
    def parent(n: int) -> None:
        for i in range(3):
            child.delay(n * 10 + i)

    parent.delay(1)
    app.flush(10)
    with app.worker(concurrency=2):
        assert wait_until(lambda: sorted(children) == [10, 11, 12], timeout=30)
