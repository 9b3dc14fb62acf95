"""Virtual partitions: one Kafka partition feeds many threads; per-key order holds; collapse."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from kafka_jobs import dlq
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import start_worker, stop


class Concurrency:
    """Counts jobs running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_one_partition_500_keys_run_in_parallel_lanes_in_per_key_order(
    kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic, concurrency=16)
    app.configure_topic(topic, virtual_partitions=True, retries=1)
    order: dict[str, list[int]] = defaultdict(list)
    running = Concurrency()
    lock = threading.Lock()

    @app.job(key="key")
    def step(key: str, seq: int, pause_ms: int) -> None:
        with running:
            time.sleep(pause_ms / 1000)
            with lock:
                order[key].append(seq)

    rng = random.Random(7)
    for seq in range(10):
        for k in range(500):
            step.delay(f"key-{k}", seq, rng.randint(0, 20))
    app.flush(30)
    with app.worker(concurrency=16):
        assert wait_until(lambda: sum(len(v) for v in order.values()) >= 5000, timeout=180)
    assert len(order) == 500
    assert all(seqs == list(range(10)) for seqs in order.values()), "per-key order broken"
    assert running.peak >= 8, f"at most {running.peak} lanes were busy at once"


def test_a_failing_lane_collapses_then_retries_sequentially_then_dead_letters(
    kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic, concurrency=8)
    app.configure_topic(topic, virtual_partitions=True, retries=1, backoff=0.1)
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @app.job(key="key")
    def step(n: int, key: str) -> None:
        with lock:
            runs[n] += 1
        time.sleep(0.005)
        if n == 50:
            raise ValueError("bad record")

    events: list[Event] = []
    app.events.subscribe(events.append)
    for n in range(200):
        step.delay(n, f"k{n % 20}")
    app.flush(30)
    with app.worker(concurrency=8):
        assert wait_until(lambda: len(runs) == 200, timeout=60)
        assert wait_until(lambda: any(e.name == "job.dead_lettered" for e in events), timeout=30)
    assert runs[50] == 2, "the lane run, then exactly one sequential retry"
    assert max(runs.values()) <= 2, "finished work re-ran more than once"
    letters = dlq.read(app, f"{topic}.dlq").letters
    assert [letter.info["message"] for letter in letters] == ["bad record"]


def test_configuration_error_without_a_retry_for_the_collapse(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, virtual_partitions=True)

    @app.job
    def noop() -> None: ...

    try:
        app.worker()
    except ValueError as error:
        assert "retries" in str(error)
    else:
        raise AssertionError("virtual partitions + dead letters + retries=0 must be refused")


def test_a_jobs_own_retries_satisfy_the_collapse_check(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, virtual_partitions=True)  # the topic default: retries=0
    ran: list[int] = []

    @app.job(retries=1, backoff=0.1)
    def step(n: int) -> None:
        ran.append(n)

    for n in range(3):
        step.delay(n)
    app.flush(10)
    with app.worker():  # starts: the only job declares its retry
        assert wait_until(lambda: sorted(ran) == [0, 1, 2], timeout=60)


def test_kill_9_with_virtual_partitions_loses_nothing(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(partitions=1), new_group()
    record = ledger_producer(topic)
    for seq in range(3000):
        record.delay(seq, f"k{seq % 100}")
    record.app.flush(30)
    first = start_worker(
        kafka_broker, topic, group, tmp_path, sleep=0.002, concurrency=8, virtual=True
    )
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= 600, timeout=60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    ran_before = len(ledger.executions(tmp_path))
    second = start_worker(kafka_broker, topic, group, tmp_path, concurrency=8, virtual=True)
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= 3000, timeout=120)
    finally:
        assert stop(second) == 0
    executions = ledger.executions(tmp_path)
    assert {e.seq for e in executions} == set(range(3000))
    assert ledger.duplicates(executions) <= ran_before
    ledger.assert_order_per_process(executions, by="key")


def test_long_running_lanes_outlive_the_poll_interval_and_are_reported(
    kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic, consumer_config={"max.poll.interval.ms": 10_000})
    balanced = VirtualPartitions(distribution="balanced")  # four keys, four lanes, surely
    app.configure_topic(topic, virtual_partitions=balanced, long_running=True, retries=1)
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    @app.job(key="key")
    def slow(key: str) -> None:
        started = time.monotonic()
        while time.monotonic() - started < 12:  # longer than max.poll.interval.ms
            time.sleep(0.1)
        with lock:
            runs[key] += 1

    events: list[Event] = []
    app.events.subscribe(events.append)
    for k in range(4):
        slow.delay(f"k{k}")
    app.flush(10)
    worker = app.worker(concurrency=4)
    with worker:
        assert wait_until(
            lambda: any(r.jobs_running == 4 and r.paused for r in worker.report()), timeout=30
        ), "four lanes run at once while the partition stays paused"
        assert wait_until(lambda: sum(runs.values()) == 4, timeout=60)
        # The listener collects the last lane a moment after it returns.
        assert wait_until(lambda: worker.report()[0].committable == 4, timeout=10)
        before_stop = list(events)
    assert runs == Counter({f"k{k}": 1 for k in range(4)})
    assert not [e for e in before_stop if e.name in ("partitions.revoked", "partitions.lost")]


def test_delayed_jobs_reach_a_topic_with_virtual_partitions(kafka_app, new_topic) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic, concurrency=4)
    app.configure_topic(topic, virtual_partitions=True, retries=1)
    ran: list[tuple[str, float]] = []
    lock = threading.Lock()

    @app.job(key="key")
    def later(key: str) -> None:
        with lock:
            ran.append((key, time.time()))

    with app.worker(concurrency=4):
        handles = [later.apply_async(args=(f"k{n}",), countdown=1.5) for n in range(4)]
        app.flush(10)
        assert wait_until(lambda: len(ran) == 4, timeout=60)
    due = max(h.eta_ms or 0 for h in handles) / 1000
    assert sorted(k for k, _ in ran) == ["k0", "k1", "k2", "k3"]
    assert all(at >= due - 0.05 for _, at in ran), "none ran before its eta"
