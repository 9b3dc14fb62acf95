"""`async def` jobs: run on the worker's event loop, bounded in flight, same guarantees."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections import Counter, defaultdict

from kafka_jobs import current_job, dlq
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.testing import wait_until


class InFlight:
    """Counts coroutines running at once (they all run on one loop thread)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


def test_1000_async_jobs_bounded_in_flight_in_key_order(kafka_app, new_topic) -> None:
    topic = new_topic(partitions=2)
    app = kafka_app(default_topic=topic, concurrency=4, async_concurrency=25)
    app.configure_topic(topic, virtual_partitions=VirtualPartitions(max_partitions=40), retries=1)
    order: dict[str, list[int]] = defaultdict(list)
    contexts_ok: list[bool] = []
    in_flight = InFlight()
    threads: set[str] = set()

    @app.job(key="key")
    async def fetch(key: str, seq: int) -> None:
        own = current_job()
        with in_flight:
            await asyncio.sleep(0.01)
            # Every coroutine keeps its own context while others run on the same loop.
            contexts_ok.append(current_job() is own and own.key == key.encode())
            order[key].append(seq)
        threads.add(threading.current_thread().name)

    for seq in range(10):
        for k in range(100):
            fetch.delay(f"key-{k}", seq)
    app.flush(30)
    with app.worker(concurrency=4):
        assert wait_until(lambda: sum(len(v) for v in order.values()) >= 1000, timeout=120)
    assert all(seqs == list(range(10)) for seqs in order.values()), "per-key order broken"
    assert len(order) == 100 and all(contexts_ok)
    assert in_flight.peak <= 25, f"{in_flight.peak} async jobs in flight, the bound is 25"
    # More than the 4 worker threads at once: the threads do not wait for coroutines.
    assert in_flight.peak > 4, f"only {in_flight.peak} in flight"
    assert threads == {"kafka-jobs-asyncio"}


def test_async_job_retries_then_dead_letters_with_its_exception(kafka_app, new_topic) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic)
    runs: Counter[int] = Counter()

    @app.job(retries=2, backoff=0.05)
    async def flaky(n: int) -> int:
        runs[n] += 1
        await asyncio.sleep(0)
        if n == 1 or (n == 2 and runs[n] == 1):
            raise ConnectionError(f"upstream refused {n}")
        return n

    for n in range(4):
        flaky.delay(n)
    flaky.apply_async((5, "too many"))  # fails before any await: building the coroutine
    app.flush(30)
    with app.worker():
        assert wait_until(lambda: len(dlq.read(app, f"{topic}.dlq").letters) == 2, timeout=60)
        assert wait_until(lambda: sum(runs.values()) >= 7, timeout=30)
    assert runs == Counter({0: 1, 1: 3, 2: 2, 3: 1})
    refused, bad_call = dlq.read(app, f"{topic}.dlq").letters
    assert refused.info["exception"].endswith("ConnectionError")
    assert refused.info["message"] == "upstream refused 1"
    assert refused.info["attempts"] == "3"
    assert bad_call.info["exception"].endswith("TypeError")
    assert bad_call.info["attempts"] == "3"


def test_long_running_async_job_sees_its_partition_and_the_other_flows(
    kafka_app, new_topic
) -> None:
    slow_topic, fast_topic = new_topic(), new_topic()
    app = kafka_app(async_concurrency=4)
    app.configure_topic(slow_topic, long_running=True)
    done: list[str] = []

    @app.job(topic=slow_topic)
    async def slow() -> None:
        for _ in range(40):  # 2 s, checking for revocation like a real long job would
            if current_job().revoked():
                return
            await asyncio.sleep(0.05)
        done.append("slow")

    @app.job(topic=fast_topic)
    def fast(n: int) -> None:
        done.append(f"fast-{n}")

    slow.delay()
    app.flush(30)
    with app.worker(concurrency=1) as worker:
        assert wait_until(lambda: any(r.jobs_running for r in worker.report()), timeout=30)
        for n in range(3):
            fast.delay(n)
        app.flush(30)
        assert wait_until(lambda: len(done) == 4, timeout=30)
    # One worker thread: the sync jobs ran while the async one was still awaiting.
    assert done[-1] == "slow" and sorted(done[:3]) == ["fast-0", "fast-1", "fast-2"]


def test_awaitable_enqueue_from_asyncio_code(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    seen: list[int] = []

    @app.job
    def record(n: int) -> None:
        seen.append(n)

    async def producer() -> list[int | None]:
        handles = await asyncio.gather(*(record.adelay(n) for n in range(5)))
        return [handle.offset for handle in handles]

    offsets = asyncio.run(producer())
    assert sorted(o for o in offsets if o is not None) == [0, 1, 2, 3, 4]
    with app.worker():
        assert wait_until(lambda: sorted(seen) == [0, 1, 2, 3, 4], timeout=30)


def test_sys_exit_in_an_async_job_fails_that_job_only(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    seen: list[int] = []

    def sync_looking(fn):  # a plain decorator: the job no longer looks like `async def`
        @functools.wraps(fn)
        def call(*args, **kwargs):
            return fn(*args, **kwargs)

        return call

    @app.job(retries=0)
    @sync_looking
    async def step(n: int) -> None:
        await asyncio.sleep(0)
        if n == 1:
            sys.exit(3)
        seen.append(n)

    for n in range(4):
        step.delay(n)
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: sorted(seen) == [0, 2, 3], timeout=30), seen
        assert wait_until(lambda: dlq.read(app, f"{topic}.dlq").letters, timeout=30)
    (letter,) = dlq.read(app, f"{topic}.dlq").letters
    assert (
        letter.info["exception"].endswith("JobExited") and "SystemExit(3)" in letter.info["message"]
    )
