"""Retries that wait longer than `retry_pause_max` are re-enqueued: their partition goes on.

Effects are read back from the broker: every job writes one record to an effects
topic (acknowledged before the job returns), so the order of that topic's single
partition is the order in which jobs finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from kafka_jobs import App, Retry, current_job
from kafka_jobs.delay.tiers import tier_topic
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import BrokerInfo, wait_until
from kafka_jobs.wire import (
    H_ATTEMPT,
    H_DLQ_ATTEMPTS,
    H_DLQ_EXCEPTION,
    H_DLQ_FIRST_FAILED,
    H_DLQ_LAST_FAILED,
    H_ID,
    header_map,
)
from tests import ledger
from tests.integration.conftest import stop, worker_process
from tests.integration.effects import Effects, effects_of


def test_a_6s_retry_does_not_hold_100_jobs_of_other_keys_on_its_partition(
    kafka_app, kafka_broker: BrokerInfo, new_topic, reader
) -> None:
    topic, effects_topic = new_topic(), new_topic(prefix="effects")  # one partition each
    app = kafka_app(default_topic=topic, keep_result=True)
    effects = Effects(kafka_broker, effects_topic)

    @app.job(key="key")
    def step(n: int, key: str) -> int:
        job = current_job()
        if key == "slow" and job.attempt == 1:
            effects.write("slow-failed", attempt=job.attempt)
            raise Retry(countdown=6)
        effects.write(key, n=n, attempt=job.attempt)
        return job.attempt

    events: list[Event] = []
    app.events.subscribe(events.append)
    slow = step.delay(0, "slow")
    for n in range(100):
        step.delay(n, f"k{n % 10}")  # after the slow one, on the same partition
    app.flush(30)
    done = reader(effects_topic)
    with app.worker(concurrency=2):
        assert wait_until(lambda: len(done.read()) == 102, timeout=90)
        assert slow.get(30) == 2  # its second run succeeded, and knew its attempt
    seen = effects_of(done.records)
    labels = [e["label"] for e in seen]
    assert labels[0] == "slow-failed"
    assert labels[-1] == "slow"  # every other job finished before the retry ran
    failed_at, others, retried = seen[0]["at"], seen[1:-1], seen[-1]
    assert len(others) == 100 and {e["attempt"] for e in others} == {1}
    assert retried["at"] >= failed_at + 6.0  # the countdown is kept ...
    assert retried["at"] < failed_at + 60.0  # ... and the retry is not lost
    # The 100 jobs ran while the retry waited, not after it.
    assert max(e["at"] for e in others) < failed_at + 6.0
    # The partition holds the 101 jobs plus one re-enqueued copy; all are committed.
    copies = reader(topic).read()
    assert len(copies) == 102
    assert header_map(copies[-1].headers())[H_ATTEMPT] == b"2"
    assert wait_until(lambda: kafka_broker.committed(app.settings.group_id, topic) == 102, 30, 0.5)
    retrying = [e for e in events if e.name == "job.retrying"]
    assert [(e.payload["how"], e.payload["delay"]) for e in retrying] == [("requeued", 6.0)]
    assert slow.state == "succeeded"


def test_a_re_enqueued_job_shows_retrying_until_its_next_run(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), keep_result=True)
    release = threading.Event()

    @app.job
    def waits() -> int:
        if current_job().attempt == 1:
            raise Retry(countdown=2)
        release.wait(30)  # the state is read while the second run is held here
        return current_job().attempt

    handle = waits.delay()
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: handle.state == "retrying", timeout=60)
        release.set()
        assert handle.get(60) == 2
    assert handle.state == "succeeded"


@pytest.mark.parametrize("exhausted_by", ["policy", "max_retries"])
def test_exhausted_retries_are_dead_lettered_with_their_attempts(
    kafka_app, new_topic, reader, exhausted_by: str
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    attempts: list[int] = []

    if exhausted_by == "policy":

        @app.job(retries=2, backoff=1.5, backoff_max=1.5)
        def fails() -> None:
            attempts.append(current_job().attempt)
            raise ConnectionError("still down")  # backoff over 1 s with jitter: re-enqueued

        expected_attempts, expected_error = 3, b"builtins.ConnectionError"
    else:

        @app.job(retries=5)
        def fails() -> None:
            attempts.append(current_job().attempt)
            current_job().retry(countdown=1.5, exc=KeyError("gone"), max_retries=1)

        expected_attempts, expected_error = 2, b"builtins.KeyError"

    events: list[Event] = []
    app.events.subscribe(events.append)
    handle = fails.delay()
    app.flush(10)
    dead = reader(f"{topic}.dlq")
    with app.worker():
        assert wait_until(lambda: len(dead.read()) == 1, timeout=90)
    assert attempts == list(range(1, expected_attempts + 1))
    [letter] = dead.records
    headers = header_map(letter.headers())
    assert headers[H_ID] == handle.id.encode()
    assert headers[H_DLQ_ATTEMPTS] == str(expected_attempts).encode()
    assert headers[H_DLQ_EXCEPTION] == expected_error
    first, last = int(headers[H_DLQ_FIRST_FAILED] or 0), int(headers[H_DLQ_LAST_FAILED] or 0)
    assert last - first >= 1000 * (expected_attempts - 1)  # the first run's time was carried
    retrying = [e for e in events if e.name == "job.retrying"]
    assert [e.payload["how"] for e in retrying] == ["requeued"] * (expected_attempts - 1)
    assert [e.payload["attempt"] for e in retrying] == list(range(1, expected_attempts))


@pytest.mark.parametrize("declared_on", ["job", "topic", "app"])
def test_strict_ordering_still_pauses_the_partition(
    kafka_app, kafka_broker: BrokerInfo, new_topic, reader, declared_on: str
) -> None:
    topic, effects_topic = new_topic(), new_topic(prefix="effects")
    app = kafka_app(
        default_topic=topic, **({"retry_ordering": "strict"} if declared_on == "app" else {})
    )
    if declared_on == "topic":
        app.configure_topic(topic, retry_ordering="strict")
    effects = Effects(kafka_broker, effects_topic)
    options: dict[str, Any] = {"retry_ordering": "strict"} if declared_on == "job" else {}

    @app.job(key="key", **options)
    def step(n: int, key: str) -> None:
        if key == "slow" and current_job().attempt == 1:
            raise Retry(countdown=2.5)
        effects.write(key, n=n, attempt=current_job().attempt)

    events: list[Event] = []
    app.events.subscribe(events.append)
    step.delay(0, "slow")
    for n in range(20):
        step.delay(n, f"k{n % 5}")
    app.flush(30)
    done = reader(effects_topic)
    with app.worker():
        assert wait_until(lambda: len(done.read()) == 21, timeout=60)
    seen = effects_of(done.records)
    # Strict: the partition waited for the retry; the jobs behind it ran after it, in order.
    assert seen[0]["label"] == "slow" and seen[0]["attempt"] == 2
    assert [e["n"] for e in seen[1:]] == list(range(20))
    assert len(reader(topic).read()) == 21  # nothing was re-enqueued
    [retrying] = [e for e in events if e.name == "job.retrying"]
    assert (retrying.payload["how"], retrying.payload["delay"]) == ("paused", 2.5)


@pytest.mark.parametrize("kind", ["async", "virtual"])
def test_async_jobs_and_virtual_partitions_re_enqueue_too(
    kafka_app, new_topic, reader, kind: str
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, virtual_partitions=kind == "virtual", retries=3)
    runs: list[tuple[int, int]] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        attempt = current_job().attempt
        with lock:
            runs.append((n, attempt))
        if n == 0 and attempt < 3:
            raise Retry(countdown=2)

    if kind == "async":

        @app.job(key="key")
        async def step(n: int, key: str) -> None:
            run(n)

    else:

        @app.job(key="key")
        def step(n: int, key: str) -> None:
            if n == 0 and current_job().attempt == 1:
                # When the poll fetched all 11, the batch's last record runs in another
                # lane: let it finish first, so the collapse finds it done.
                wait_until(lambda: any(m == 10 for m, _ in runs), 3)
            run(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    for n in range(11):
        step.delay(n, "slow" if n == 0 else f"k{n}")
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: (0, 3) in runs and {n for n, _ in runs} == set(range(11)), 60)
    assert [a for n, a in runs if n == 0] == [1, 2, 3]
    requeued = [e.payload["attempt"] for e in events if e.name == "job.retrying"]
    if kind == "async":
        assert requeued == [1, 2]
    else:
        # Attempt 1 fails in a lane: the batch collapses, which counts as an attempt
        # without asking the failure policy. Attempt 2 runs sequentially, even when
        # the other lanes finished the rest of the batch, and is re-enqueued.
        assert requeued == [2]
    # Every re-enqueue left exactly one copy; nothing else was written to the topic.
    assert len(reader(topic).read()) == 11 + len(requeued)


def test_a_refused_re_enqueue_is_tried_again_without_running_the_job_again(
    kafka_app, kafka_broker: BrokerInfo, new_topic, new_group
) -> None:
    topic, group = new_topic(), new_group()
    # No broker accepts a topic name this long: every write to a delay tier is refused.
    app = kafka_app(default_topic=topic, group_id=group, delay_topic_prefix="d" * 250)
    runs: list[int] = []

    @app.job
    def step(n: int) -> None:
        runs.append(n)
        if n == 0:
            raise Retry(countdown=5)

    events: list[Event] = []
    app.events.subscribe(events.append)
    step.delay(0)
    step.delay(1)
    app.flush(10)
    with app.worker(dispatch_delayed=False):
        assert wait_until(
            lambda: sum(e.name == "retry.requeue_failed" for e in events) >= 2, timeout=60
        )
        # Nothing moved past the record: the job behind it waits, nothing is committed.
        assert runs == [0]
        assert kafka_broker.committed(group, topic) < 1
    assert not [e for e in events if e.name == "job.retrying"]


def _requeue_worker(
    broker: BrokerInfo, topic: str, group: str, prefix: str, directory: Path, commit: float
) -> subprocess.Popen[bytes]:
    env = {
        ledger.ENV: str(directory),
        "REQUEUE_TOPIC": topic,
        "KAFKA_JOBS_DELAY_TOPIC_PREFIX": prefix,
        "KAFKA_JOBS_COMMIT_INTERVAL": str(commit),
    }
    app = "tests.integration.processing.requeue_app"
    return worker_process(broker, app, group, env, directory / "worker.log")


def _runs(directory: Path, attempt: int) -> int:
    return sum(
        1
        for e in ledger.events(directory)
        if e.kind == "run" and json.loads(e.detail) == {"seq": 0, "attempt": attempt}
    )


def test_kill_9_after_the_re_enqueue_neither_loses_nor_duplicates_the_retry(
    kafka_app, kafka_broker: BrokerInfo, new_topic, new_group, reader, tmp_path: Path
) -> None:
    topic, group = new_topic(), new_group()
    producer_app: App = kafka_app(default_topic=topic)
    prefix = producer_app.settings.delay_topic_prefix

    @producer_app.job(key="key", name="requeue.step")
    def step(seq: int, key: str) -> None:
        raise AssertionError("runs in the worker process only")

    ledger.create(tmp_path)
    retried = step.delay(0, "slow")
    for seq in range(1, 21):
        step.delay(seq, f"k{seq % 4}")
    producer_app.flush(30)
    tier = reader(tier_topic(prefix, 4))  # Retry(countdown=4) waits in the 4 s tier

    def copies() -> int:
        return sum(header_map(r.headers())[H_ID] == retried.id.encode() for r in tier.read())

    # A long commit interval: the kill lands after the copy is acknowledged and
    # before the failed record's offset is committed, the window of a duplicate.
    first = _requeue_worker(kafka_broker, topic, group, prefix, tmp_path, commit=120)
    try:
        assert wait_until(lambda: copies() == 1, timeout=90)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    second = _requeue_worker(kafka_broker, topic, group, prefix, tmp_path, commit=1)
    try:
        jobs = reader(topic)

        def settled() -> bool:  # every copy dispatched, run and committed; all jobs ran
            written, on_topic = copies(), len(jobs.read())
            successes = [e.seq for e in ledger.executions(tmp_path)]
            return (
                written >= 1
                and on_topic == 21 + written
                and kafka_broker.committed(group, topic) == on_topic
                and successes.count(0) == written
                and set(successes) >= set(range(21))
            )

        assert wait_until(settled, timeout=120, interval=0.5)
        # The record ran again in the second worker (its offset was not committed):
        # at-least-once, one more copy. Each acknowledged copy runs once, as attempt 2.
        written = copies()
        assert 1 <= written <= 2
        assert _runs(tmp_path, 1) == written
        assert _runs(tmp_path, 2) == written
        assert _runs(tmp_path, 3) == 0
    finally:
        assert stop(second) == 0
    assert [e.seq for e in ledger.executions(tmp_path)].count(0) == written
