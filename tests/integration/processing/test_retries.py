"""Retries in place (retry_ordering="strict"): a backoff pauses only its own partition."""

from __future__ import annotations

import threading

from kafka_jobs import current_job
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import wait_until
from tests.integration.conftest import key_off_partition


def test_fails_twice_then_succeeds_with_three_retries_while_other_partitions_flow(
    kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=2)
    app = kafka_app(default_topic=topic)
    attempts: list[int] = []
    steady: list[int] = []
    lock = threading.Lock()

    # strict: the retries pause the partition (test_retry_requeue.py has the re-enqueued ones)
    @app.job(key="key", retries=3, backoff=3.0, backoff_max=4.0, retry_ordering="strict")
    def flaky(key: str) -> None:
        with lock:
            attempts.append(current_job().attempt)
            if len(attempts) < 3:
                raise ConnectionError("downstream not ready")

    @app.job(key="key")
    def work(n: int, key: str) -> None:
        with lock:
            steady.append(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    flaky_partition = flaky.delay("a").wait(10).partition
    other_key = key_off_partition(flaky_partition, lambda k: work.apply_async(args=(-1, k)))
    with app.worker(concurrency=2):
        assert wait_until(lambda: len(attempts) >= 1 and -1 in steady, timeout=30)
        for n in range(20):
            work.delay(n, other_key)
        app.flush(10)
        assert wait_until(lambda: len(steady) == 21, timeout=30)
        # The other partition's jobs all ran while the flaky one was still waiting.
        assert len(attempts) < 3
        assert wait_until(lambda: len(attempts) == 3, timeout=30)
    assert attempts == [1, 2, 3]
    retries = [e for e in events if e.name == "job.retrying"]
    assert [e.payload["attempt"] for e in retries] == [1, 2]
    assert not [e for e in events if e.name == "job.dead_lettered"]


def test_give_up_on_skips_retries(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    runs: list[int] = []

    @app.job(retries=5, backoff=0.1, give_up_on=(KeyError,))
    def lookup(n: int) -> None:
        runs.append(n)
        raise KeyError(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    lookup.delay(7)
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: any(e.name == "job.dead_lettered" for e in events), timeout=30)
    assert runs == [7]
