"""Long-running jobs outlive max.poll.interval.ms in their group; the trap, and its guard."""

from __future__ import annotations

import threading
import time

from kafka_jobs import current_job
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import wait_until
from tests.integration.conftest import key_off_partition

SHORT_POLL_INTERVAL = {"max.poll.interval.ms": 10_000}
REBALANCES = ("partitions.revoked", "partitions.lost")


def test_a_30s_job_on_a_long_running_topic_runs_once_while_other_partitions_flow(
    kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=2)
    app = kafka_app(default_topic=topic, consumer_config=SHORT_POLL_INTERVAL)
    app.configure_topic(topic, long_running=True)
    slow_runs: list[tuple[float, float]] = []
    quick: list[tuple[int, float]] = []
    lock = threading.Lock()

    @app.job(key="key")
    def slow(key: str) -> None:
        started = time.monotonic()
        while time.monotonic() - started < 30 and not current_job().stopping():
            time.sleep(0.2)
        with lock:
            slow_runs.append((started, time.monotonic()))

    @app.job(key="key")
    def quick_job(n: int, key: str) -> None:
        with lock:
            quick.append((n, time.monotonic()))

    events: list[Event] = []
    app.events.subscribe(events.append)
    slow_partition = slow.delay("slow").wait(10).partition
    other_key = key_off_partition(slow_partition, lambda k: quick_job.apply_async(args=(-1, k)))
    with app.worker(concurrency=2):
        assert wait_until(lambda: len(quick) == 1, timeout=30)
        for n in range(60):  # keep feeding the other partition until the slow job ends
            if slow_runs:
                break
            quick_job.delay(n, other_key)
            app.flush(10)
            assert wait_until(lambda n=n: any(q == n for q, _ in quick), timeout=10)
            time.sleep(1)
        assert wait_until(lambda: len(slow_runs) == 1, timeout=60)
        time.sleep(2)  # a redelivery would start right away
        before_stop = list(events)  # stopping revokes everything, which is fine
    assert len(slow_runs) == 1
    slow_started, slow_ended = slow_runs[0]
    assert slow_ended - slow_started >= 30, "the job must not have been cut short"
    during = [n for n, at in quick if slow_started < at < slow_ended]
    assert len(during) >= 20, f"other partitions kept flowing during the slow job: {during}"
    assert not [e for e in before_stop if e.name in REBALANCES], "the member stayed in its group"


def test_the_same_job_on_a_regular_topic_falls_into_the_trap_after_a_warning(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, consumer_config=SHORT_POLL_INTERVAL)
    runs: list[int] = []

    @app.job
    def slow() -> None:
        runs.append(current_job().offset)
        if len(runs) == 1:  # the first run outlives the poll interval; the redelivery is quick
            started = time.monotonic()
            while time.monotonic() - started < 16:
                time.sleep(0.2)

    events: list[Event] = []
    app.events.subscribe(events.append)
    slow.delay()
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: len(runs) == 2, timeout=90)
    names = [e.name for e in events]
    assert "poll_interval.stalling" in names
    kicked = [i for i, name in enumerate(names) if name in REBALANCES]
    assert kicked, "the member should have been removed from the group"
    assert names.index("poll_interval.stalling") < kicked[0], "the warning comes first"
    assert runs == [0, 0], "the batch ran again after the member lost it"


def test_adaptive_batches_shrink_below_the_limit_so_no_rebalance_happens(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, consumer_config=SHORT_POLL_INTERVAL, adaptive_batch=True)
    runs: list[int] = []

    @app.job
    def step(n: int) -> None:
        time.sleep(0.4)  # 1000 of these in one batch would take 400 s
        runs.append(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    for n in range(40):
        step.delay(n)
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: len(runs) == 40, timeout=120)
        before_stop = list(events)
    assert runs == list(range(40)), "each job ran once, in order"
    sizes = [e.payload["batch_size"] for e in events if e.name == "poll_interval.batch_size"]
    assert sizes and max(sizes) * 0.4 < 10 * 0.7
    assert not [e for e in before_stop if e.name in REBALANCES]
