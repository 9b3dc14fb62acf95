"""Chains and chords with `canvas_transactions`: the next step commits with the step's offset.

What each broker guarantees (found by `probes.hides_aborted_records`, never by name):
on a broker that hides aborted records from read_committed readers (Apache Kafka) a
next step written by a run that did not commit is never seen, so it is read once;
on the embedded broker it is seen, and the `kj-once` mark skips the copy, so the
step's code still runs once and the chain's value is right on both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

import kafka_jobs.transactions
from kafka_jobs import chain, chord
from kafka_jobs.canvas.worker import JOIN_TASK
from kafka_jobs.connection import probes
from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from kafka_jobs.wire import read_task_name
from tests.integration.conftest import stop, worker_process

# Short transactions: a killed worker's open one is aborted by the broker after this
# (plus its cleanup interval, 10 s by default), which frees the partitions it wrote.
TXN_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def aborted_records_hidden(kafka_broker: BrokerInfo) -> bool:
    """Probe: do read_committed consumers skip aborted transactional records on this broker?"""
    return probes.hides_aborted_records({"bootstrap.servers": kafka_broker.bootstrap_servers})


def _tasks(broker: BrokerInfo, topic: str, isolation: str) -> list[str | None]:
    """The task names of every record of partition 0 of `topic` (bounded: 10 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": unique_name("reader"),
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    names: list[str | None] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for record in consumer.consume(100, 0.2):
                error = record.error()
                if error is None:
                    names.append(read_task_name(record.headers()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    return names
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: no end of partition within 10 s ({names})")


class Runs:
    """How often each task's code ran (thread-safe)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]


class FailFirstCommits:
    """Replaces the continuation's commit: the first `count` fail (the transaction aborts)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.calls = 0
        self._commit = kafka_jobs.transactions._commit
        self._lock = threading.Lock()

    def __call__(self, producer: Producer, timeout: float) -> None:
        with self._lock:
            self.calls += 1
            fail, self.left = self.left > 0, self.left - 1
        if fail:
            raise KafkaException(KafkaError(KafkaError._FAIL, "test: commit refused"))
        self._commit(producer, timeout)


def _chain_app(kafka_app: Any, new_topic: Any, runs: Runs, **options: Any) -> tuple[Any, ...]:
    topics = [new_topic(), new_topic(), new_topic()]
    app = kafka_app(
        default_topic=topics[0],
        results_topic=unique_name("results"),
        keep_result=True,
        canvas_transactions=True,
        **options,
    )

    @app.job(retries=1, backoff=0.1)
    def first(x: int) -> int:
        runs.add("first")
        return x + 1

    @app.job(topic=topics[1])
    def second(x: int) -> int:
        runs.add("second")
        return x * 10

    @app.job(topic=topics[2])
    def third(x: int) -> int:
        runs.add("third")
        return x + 5

    return app, topics, first, second, third


def test_a_commit_that_fails_aborts_the_next_step_and_the_chain_goes_on_once(
    kafka_broker: BrokerInfo,
    kafka_app,
    new_topic,
    monkeypatch: pytest.MonkeyPatch,
    aborted_records_hidden: bool,
) -> None:
    runs = Runs()
    app, topics, first, second, third = _chain_app(kafka_app, new_topic, runs)
    commits = FailFirstCommits(1)
    monkeypatch.setattr(kafka_jobs.transactions, "_commit", commits)
    handle = chain(first.s(1), second.s(), third.s()).delay()
    app.flush(10)
    with app.worker():
        assert handle.get(timeout=60) == 25
    # first's continuation failed once: first ran again (a retry) and wrote the next
    # step again; the copy of the aborted transaction was delivered all the same.
    assert runs["first"] == 2
    assert commits.calls == 3  # first (refused), first again, second
    written = _tasks(kafka_broker, topics[1], "read_uncommitted")
    assert len(written) == 2, written
    seen = _tasks(kafka_broker, topics[1], "read_committed")
    assert len(seen) == (1 if aborted_records_hidden else 2), seen
    # The step's code ran once either way (a visible copy is skipped by its id).
    assert runs["second"] == 1
    assert runs["third"] == 1
    assert kafka_broker.committed(app.settings.group_id, topics[0]) == 1


def test_with_virtual_partitions_the_chain_goes_on_without_a_transaction(
    kafka_app, new_topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = Runs()
    app, topics, first, second, third = _chain_app(kafka_app, new_topic, runs)
    for topic in topics:  # a lane cannot commit the partition's offset in its transaction
        app.configure_topic(topic, virtual_partitions=True, retries=1)
    commits = FailFirstCommits(0)
    monkeypatch.setattr(kafka_jobs.transactions, "_commit", commits)
    handle = chain(first.s(1), second.s(), third.s()).delay()
    app.flush(10)
    with app.worker():
        assert handle.get(timeout=60) == 25
    assert commits.calls == 0
    assert (runs["first"], runs["second"], runs["third"]) == (1, 1, 1)


def test_a_chord_members_join_is_enqueued_in_its_transaction(
    kafka_broker: BrokerInfo,
    kafka_app,
    new_topic,
    monkeypatch: pytest.MonkeyPatch,
    aborted_records_hidden: bool,
) -> None:
    members_topic, callback_topic = new_topic(partitions=2), new_topic()
    app = kafka_app(
        default_topic=members_topic,
        results_topic=unique_name("results"),
        keep_result=True,
        canvas_transactions=True,
    )
    runs = Runs()

    @app.job(retries=1, backoff=0.1)
    def square(n: int) -> int:
        runs.add(f"square-{n}")
        return n * n

    @app.job(topic=callback_topic)
    def total(values: list[int]) -> int:
        runs.add("total")
        return sum(values)

    commits = FailFirstCommits(1)
    monkeypatch.setattr(kafka_jobs.transactions, "_commit", commits)
    handle = chord([square.s(n) for n in range(4)], total.s()).delay()
    app.flush(10)
    with app.worker():
        assert handle.get(timeout=60) == 0 + 1 + 4 + 9
        assert wait_until(lambda: commits.calls == 5, timeout=30)  # 4 members + 1 refused
    assert runs["total"] == 1
    assert sum(runs[f"square-{n}"] for n in range(4)) == 5  # the refused one ran again
    written = _tasks(kafka_broker, callback_topic, "read_uncommitted")
    assert written.count(JOIN_TASK) == 5, written
    seen = _tasks(kafka_broker, callback_topic, "read_committed")
    assert seen.count(JOIN_TASK) == (4 if aborted_records_hidden else 5), seen
    assert seen.count(total.name) >= 1


def _worker(
    broker: BrokerInfo, group: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    return worker_process(
        broker, "tests.integration.canvas.chain_app", group, env, log, "--concurrency", "2"
    )


def _ran(directory: Path, step: str) -> list[int]:
    """The pid of every run of `step`."""
    return [int(path.name.split("-")[1]) for path in directory.glob(f"{step}-*")]


def test_kill_9_between_a_steps_end_and_its_commit_the_next_step_is_read_once(
    kafka_broker: BrokerInfo,
    kafka_app,
    new_topic,
    new_group,
    tmp_path: Path,
    aborted_records_hidden: bool,
) -> None:
    topics, results, group = (
        [new_topic(), new_topic(), new_topic()],
        unique_name("results"),
        new_group(),
    )
    env = {
        "CHAIN_TOPIC_1": topics[0],
        "CHAIN_TOPIC_2": topics[1],
        "CHAIN_TOPIC_3": topics[2],
        "CHAIN_RESULTS": results,
        "CHAIN_DIR": str(tmp_path),
        "KAFKA_JOBS_PRODUCER_TRANSACTION_TIMEOUT_MS": str(TXN_TIMEOUT_MS),
    }
    app = kafka_app(default_topic=topics[0], results_topic=results, keep_result=True)

    @app.job(name="chain.first")
    def first(x: int) -> int:
        raise AssertionError("runs in the worker process only")

    @app.job(name="chain.second", topic=topics[1])
    def second(x: int) -> int:
        raise AssertionError("runs in the worker process only")

    @app.job(name="chain.third", topic=topics[2])
    def third(x: int) -> int:
        raise AssertionError("runs in the worker process only")

    handle = chain(first.s(1), second.s(), third.s()).delay()
    app.flush(30)
    blocked = _worker(kafka_broker, group, {**env, "CHAIN_BLOCK_COMMIT": "1"}, tmp_path / "1.log")
    try:
        marker = tmp_path / f"committing-{blocked.pid}"
        assert wait_until(marker.exists, timeout=90), (tmp_path / "1.log").read_text()
        # Between the step's end and the commit: the next step is written, not committed.
        assert _tasks(kafka_broker, topics[1], "read_uncommitted") == [second.name]
        if aborted_records_hidden:
            assert _tasks(kafka_broker, topics[1], "read_committed") == []
        os.kill(blocked.pid, signal.SIGKILL)
        blocked.wait(10)
    finally:
        if blocked.poll() is None:
            blocked.kill()
    killed_at = time.monotonic()
    assert _ran(tmp_path, "first") == [blocked.pid]
    assert not handle.steps[1].ready()

    worker = _worker(kafka_broker, group, env, tmp_path / "2.log")
    try:
        assert handle.get(timeout=150) == 25
        took = time.monotonic() - killed_at
        # Quiet: every step's record committed by the group.
        for topic in topics:
            assert wait_until(lambda t=topic: kafka_broker.committed(group, t) >= 1, timeout=60), (
                topic
            )
    finally:
        assert stop(worker) == 0
    print(f"chain ended {took:.1f} s after the kill")  # a figure for the report (-s)
    seen = _tasks(kafka_broker, topics[1], "read_committed")
    if aborted_records_hidden:
        # The killed run's transaction was aborted: the next step is read once, and
        # the first step ran again (its offset had not been committed).
        assert seen == [second.name]
        assert _tasks(kafka_broker, topics[1], "read_uncommitted") == [second.name] * 2
        assert sorted(_ran(tmp_path, "first")) == sorted([blocked.pid, worker.pid])
    else:
        assert 1 <= len(seen) <= 2, seen  # the open transaction's copy is visible here
    assert _ran(tmp_path, "second") == [worker.pid]
    assert _ran(tmp_path, "third") == [worker.pid]
