"""Rate limits of tasks and throttling of topics, against the real broker."""

from __future__ import annotations

import threading
import time

import pytest

from kafka_jobs import current_job
from kafka_jobs.testing import wait_until

# Keys the default partitioner (CRC32 of the key) sends to partition 0 / 1 of two.
KEY_P0, KEY_P1 = "d", "a"


def _recorder() -> tuple[list[tuple[float, object]], threading.Lock]:
    return [], threading.Lock()


def _events(app, name: str) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    app.events.subscribe(lambda event: seen.append(event.payload) if event.name == name else None)
    return seen


@pytest.mark.parametrize("long_running", [False, True], ids=["regular", "long-running"])
def test_200_jobs_at_50_per_second_take_about_4_seconds_and_all_run_once(
    kafka_app, new_topic, long_running: bool
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    starts: list[tuple[float, int]] = []
    lock = threading.Lock()

    @app.job(rate_limit="50/s", long_running=long_running)
    def limited(n: int) -> None:
        with lock:
            starts.append((time.monotonic(), n))

    for n in range(200):
        limited.delay(n)
    app.flush(30)
    held = _events(app, "job.rate_limited")
    with app.worker(concurrency=4):
        assert wait_until(lambda: len(starts) >= 200, timeout=90)
    assert sorted(n for _, n in starts) == list(range(200))  # each once, nothing dropped
    times = sorted(t for t, _ in starts)
    # Capacity 1 at 50/s: the 200th start comes 199 tokens, 3.98 s, after the first,
    # and any 51 consecutive starts span at least 50 tokens (1 s; a start is recorded
    # a moment after its token was taken, hence the margin).
    assert 3.5 <= times[-1] - times[0] < 30
    assert min(times[i + 50] - times[i] for i in range(len(times) - 50)) >= 0.9
    assert held and all(event["task"] == limited.name for event in held)


def test_a_task_without_a_limit_is_not_slowed_by_a_rate_limited_one(kafka_app, new_topic) -> None:
    slow_topic, fast_topic = new_topic(), new_topic()
    app = kafka_app(default_topic=slow_topic)
    done: dict[str, list[int]] = {"slow": [], "fast": []}
    slow_done_when_fast_finished: list[int] = []
    lock = threading.Lock()

    @app.job(rate_limit="20/s")
    def slow(n: int) -> None:
        with lock:
            done["slow"].append(n)

    @app.job(topic=fast_topic)
    def fast(n: int) -> None:
        with lock:
            done["fast"].append(n)
            if len(done["fast"]) == 100:
                slow_done_when_fast_finished.append(len(done["slow"]))

    for n in range(100):
        slow.delay(n)
    for n in range(100):
        fast.delay(n)
    app.flush(30)
    with app.worker(concurrency=2):
        assert wait_until(lambda: len(done["slow"]) >= 100, timeout=90)
    assert sorted(done["slow"]) == list(range(100))
    assert sorted(done["fast"]) == list(range(100))
    # 100 starts at 20/s take 4.95 s at least: the unlimited task finished well before.
    assert slow_done_when_fast_finished[0] < 100


def test_in_virtual_partitions_a_rate_limited_lane_does_not_hold_the_other_lanes(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, virtual_partitions=True, retries=1)
    starts: list[tuple[float, int]] = []
    fast_done: list[int] = []
    limited_done_when_fast_finished: list[int] = []
    lock = threading.Lock()

    @app.job(rate_limit="10/s", key="key")
    def limited(key: str, n: int) -> None:
        with lock:
            starts.append((time.monotonic(), n))

    @app.job(key="key")
    def fast(key: str, n: int) -> None:
        with lock:
            fast_done.append(n)
            if len(fast_done) == 30:
                limited_done_when_fast_finished.append(len(starts))

    for n in range(30):  # one partition; the lanes split it by key
        fast.delay("fast", n)
        limited.delay("slow", n)
    app.flush(30)
    with app.worker(concurrency=4):
        assert wait_until(lambda: len(starts) >= 30, timeout=90)
    assert sorted(n for _, n in starts) == list(range(30))
    assert sorted(fast_done) == list(range(30))
    times = sorted(t for t, _ in starts)
    assert 29 / 10 - 0.1 <= times[-1] - times[0] < 30
    # The limited lane waits for its tokens (2.9 s); the other lane did not wait with it.
    assert limited_done_when_fast_finished[0] < 30


def test_a_throttled_partition_pauses_and_the_other_goes_on(kafka_app, new_topic) -> None:
    topic = new_topic(partitions=2)
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, throttle=(10, 4.0))
    starts: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
    lock = threading.Lock()

    @app.job(key="key")
    def work(key: str, n: int) -> None:
        with lock:
            starts[current_job().partition].append((time.monotonic(), n))

    for n in range(25):
        work.delay(KEY_P0, n)
    app.flush(30)
    throttled = _events(app, "partition.throttled")
    with app.worker(concurrency=2):
        assert wait_until(lambda: len(throttled) >= 1, timeout=60)
        # Partition 0 is paused now; records enqueued to partition 1 run meanwhile.
        for n in range(5):
            work.delay(KEY_P1, 100 + n)
        app.flush(30)
        assert wait_until(lambda: len(starts[0]) >= 25 and len(starts[1]) >= 5, timeout=90)
    assert sorted(n for _, n in starts[0]) == list(range(25))
    assert sorted(n for _, n in starts[1]) == [100, 101, 102, 103, 104]
    first = sorted(t for t, _ in starts[0])
    # 10 per 4 s window: the 11th and 21st starts wait for the next windows (less the
    # time the first job took to start after its window opened).
    assert first[10] - first[0] >= 4.0 - 0.5
    assert first[20] - first[0] >= 8.0 - 0.5
    # Partition 1 was not held behind partition 0's pause.
    assert max(t for t, _ in starts[1]) < first[10]
    assert {event["partition"] for event in throttled} == {0}
    assert all(event["topic"] == topic for event in throttled)


@pytest.mark.parametrize("long_running", [False, True], ids=["regular", "long-running"])
def test_a_worker_stops_without_waiting_out_a_token_and_the_held_job_runs_later(
    kafka_app, new_topic, long_running: bool
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, shutdown_timeout=60)
    ran: list[int] = []

    @app.job(rate_limit="1/m", long_running=long_running)
    def limited(n: int) -> None:
        ran.append(n)

    for n in range(3):
        limited.delay(n)
    app.flush(30)
    held = _events(app, "job.rate_limited")
    group = f"g-{topic}"
    worker = app.worker(concurrency=2, group_id=group).start()
    try:
        assert wait_until(lambda: ran == [0] and len(held) >= 1, timeout=60)
    finally:
        worker.stop()
        stopping = time.monotonic()
        assert worker.join(90)
    # The next token is a minute away; the held job was handed back at once, not run.
    assert time.monotonic() - stopping < 50
    assert ran == [0]
    # Not counted as done: the next worker (a fresh bucket) runs it, and only it.
    with app.worker(concurrency=2, group_id=group):
        assert wait_until(lambda: len(ran) >= 2, timeout=60)
    assert ran == [0, 1]
