"""Pluggable schedulers over a real broker: withheld jobs, ticks, fair share."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from examples.schedulers import FairShareScheduler, PriorityScheduler
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.testing import wait_until
from kafka_jobs.worker import Job, JobsQueue, Scheduler


def test_withheld_jobs_block_only_their_own_group(kafka_app, new_topic) -> None:
    held_topic, free_topic = new_topic(), new_topic()
    app = kafka_app(tick_interval=0.2)
    app.configure_topic(held_topic, subscription_group="held")
    release = threading.Event()

    class Withholding(Scheduler):
        def __init__(self, queue: JobsQueue) -> None:
            super().__init__(queue)
            self.held: list[Job] = []

        def schedule_consumption(self, jobs: Sequence[Job]) -> None:
            for job in jobs:
                if job.topic == held_topic:
                    self.queue.lock(job)
                    self.held.append(job)
                else:
                    self.queue.put(job)

        def manage(self) -> None:
            while release.is_set() and self.held:
                self.queue.put(self.held.pop(0))

    ran: list[str] = []

    @app.job(topic=held_topic)
    def held(n: int) -> None:
        ran.append(f"held-{n}")

    @app.job(topic=free_topic)
    def free(n: int) -> None:
        ran.append(f"free-{n}")

    held.delay(0)
    app.flush(10)
    with app.worker(scheduler_class=Withholding):
        time.sleep(0.5)
        for n in range(3):
            free.delay(n)
            held.delay(n + 1)  # not even fetched: the held group does not poll past job 0
        app.flush(10)
        assert wait_until(
            lambda: [r for r in ran if r.startswith("free")] == ["free-0", "free-1", "free-2"],
            timeout=30,
        )
        assert not [r for r in ran if r.startswith("held")]
        release.set()  # the next tick releases them
        assert wait_until(lambda: ran.count("held-0") == 1 and "held-3" in ran, timeout=30)


def test_manage_runs_on_ticks_and_a_one_per_tick_scheduler_paces_the_backlog(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, tick_interval=0.3)
    # Four keys, four lanes: four jobs from one partition batch.
    app.configure_topic(
        topic, virtual_partitions=VirtualPartitions(distribution="balanced"), retries=1
    )
    calls: list[float] = []

    class OnePerTick(Scheduler):
        def __init__(self, queue: JobsQueue) -> None:
            super().__init__(queue)
            self.buffer: list[Job] = []
            self.last_release = 0.0

        def schedule_consumption(self, jobs: Sequence[Job]) -> None:
            for job in jobs:
                self.queue.lock(job)
                self.buffer.append(job)

        def manage(self) -> None:
            now = time.monotonic()
            calls.append(now)
            if self.buffer and now - self.last_release >= 0.25:
                self.last_release = now
                self.queue.put(self.buffer.pop(0))

    started: list[float] = []

    @app.job(key="key")
    def step(key: str) -> None:
        started.append(time.monotonic())

    for n in range(4):
        step.delay(f"k{n}")
    app.flush(10)
    with app.worker(concurrency=4, scheduler_class=OnePerTick):
        assert wait_until(lambda: len(started) == 4, timeout=30)
        idle_calls = len(calls)
        assert wait_until(lambda: len(calls) >= idle_calls + 3, timeout=10), "ticks while idle"
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert all(gap >= 0.2 for gap in gaps), f"released one per tick, not at once: {gaps}"


def test_fair_share_gives_each_assigned_topic_half_the_threads(kafka_app, new_topic) -> None:
    a, b = new_topic(), new_topic()
    app = kafka_app()
    lanes = VirtualPartitions(distribution="balanced")  # many jobs per partition at once
    app.configure_topic(a, virtual_partitions=lanes, retries=1)
    app.configure_topic(b, virtual_partitions=lanes, retries=1)
    running: defaultdict[str, int] = defaultdict(int)
    peak: defaultdict[str, int] = defaultdict(int)
    done: list[str] = []
    lock = threading.Lock()

    def work(topic: str) -> None:
        with lock:
            running[topic] += 1
            peak[topic] = max(peak[topic], running[topic])
        time.sleep(0.3)
        with lock:
            running[topic] -= 1
            done.append(topic)

    @app.job(topic=a, key="k")
    def job_a(n: int, k: str) -> None:
        work(a)

    @app.job(topic=b, key="k")
    def job_b(n: int, k: str) -> None:
        work(b)

    for n in range(8):
        job_a.delay(n, f"k{n}")
        job_b.delay(n, f"k{n}")
    app.flush(10)
    with app.worker(concurrency=4, scheduler_class=FairShareScheduler):
        assert wait_until(lambda: len(done) == 16, timeout=60)
    assert peak[a] == 2 and peak[b] == 2, dict(peak)  # both had work: two threads each

    peak.clear()
    for n in range(8):
        job_a.delay(n, f"k{n}")
    app.flush(10)
    with app.worker(concurrency=4, scheduler_class=FairShareScheduler, topics=[a]):
        assert wait_until(lambda: len(done) == 24, timeout=60)
    assert peak[a] == 4, "the only assigned topic gets every thread"


def test_clear_on_reset_drops_that_groups_jobs_and_nothing_is_lost(kafka_app, new_topic) -> None:
    reset_topic, other_topic = new_topic(), new_topic()
    app = kafka_app(tick_interval=0.2)
    app.configure_topic(reset_topic, subscription_group="reset-me", long_running=True)
    app.configure_topic(other_topic, long_running=True)
    cleared: list[tuple[str, int, set[str]]] = []
    holding = threading.Event()
    holding.set()

    class Holding(Scheduler):
        """Withholds every job while `holding` is set; releases them on ticks after."""

        def __init__(self, queue: JobsQueue) -> None:
            super().__init__(queue)
            self.buffer: list[Job] = []

        def schedule_consumption(self, jobs: Sequence[Job]) -> None:
            for job in jobs:
                self.queue.lock(job)
                self.buffer.append(job)

        def manage(self) -> None:
            while not holding.is_set() and self.buffer:
                self.queue.put(self.buffer.pop(0))

        def clear(self, group_id: str) -> list[Job]:
            dropped = [job for job in self.buffer if job.group_id == group_id]
            self.buffer = [job for job in self.buffer if job.group_id != group_id]
            cleared.append((group_id, len(dropped), {job.topic for job in self.buffer}))
            return dropped

    ran: list[str] = []

    @app.job(topic=reset_topic)
    def first(n: int) -> None:
        ran.append(f"reset-{n}")

    @app.job(topic=other_topic)
    def second(n: int) -> None:
        ran.append(f"other-{n}")

    for n in range(3):
        first.delay(n)
        second.delay(n)
    app.flush(10)
    worker = app.worker(scheduler_class=Holding)
    with worker:
        scheduler = worker.scheduler.scheduler
        assert isinstance(scheduler, Holding)
        assert wait_until(
            lambda: {j.topic for j in scheduler.buffer} == {reset_topic, other_topic}, timeout=30
        )
        worker.reset("reset-me")
        # Only that group's job goes; the other group's stays buffered.
        assert wait_until(lambda: cleared == [("reset-me", 1, {other_topic})], timeout=30)
        holding.clear()  # release everything: the reset group's records come again
        assert wait_until(lambda: len(ran) == 6, timeout=60)
    assert sorted(ran) == [f"{kind}-{n}" for kind in ("other", "reset") for n in range(3)]


def test_lifecycle_hooks_reach_their_scheduler_methods(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, tick_interval=0.2)
    seen: list[str] = []
    ran: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    class Recording(Scheduler):
        def _record(self, kind: str, jobs: Sequence[Job]) -> None:
            with lock:
                seen.append(kind)
            for job in jobs:
                self.queue.put(job)

        def schedule_consumption(self, jobs: Sequence[Job]) -> None:
            self._record("consumption", jobs)

        def schedule_revocation(self, jobs: Sequence[Job]) -> None:
            self._record("revocation", jobs)

        def schedule_shutdown(self, jobs: Sequence[Job]) -> None:
            self._record("shutdown", jobs)

        def schedule_idle(self, jobs: Sequence[Job]) -> None:
            self._record("idle", jobs)

        def schedule_periodic(self, jobs: Sequence[Job]) -> None:
            self._record("periodic", jobs)

    def hook(event: str):  # type: ignore[no-untyped-def]
        def run(hook_topic: str, partition: int) -> None:
            with lock:
                ran.append((event, hook_topic, partition))

        return run

    for event in ("revoked", "shutdown", "idle"):
        app.on(event, topic=topic)(hook(event))  # type: ignore[arg-type]
    app.on("periodic", every=0.3)(hook("periodic"))

    @app.job
    def noop() -> None: ...

    noop.delay()
    app.flush(10)
    worker = app.worker(scheduler_class=Recording)
    with worker:
        assert wait_until(lambda: {"consumption", "idle", "periodic"} <= set(seen), timeout=30)
        worker.reset()  # the old connection's partitions are revoked
        assert wait_until(lambda: "revocation" in seen, timeout=30)
        after_reset = len(ran)
        # Idle again once the new connection owns the partition.
        assert wait_until(lambda: ("idle", topic, 0) in ran[after_reset:], timeout=30)
    assert "shutdown" in seen
    assert {event for event, _, _ in ran} == {"revoked", "shutdown", "idle", "periodic"}
    assert all((t, p) == (topic, 0) for _, t, p in ran)


def test_priority_scheduler_starts_the_high_priority_topic_first(kafka_app, new_topic) -> None:
    high, low = new_topic(), new_topic()
    app = kafka_app(tick_interval=0.2)
    for topic in (high, low):  # long-running: both backlogs are fetched while jobs wait
        app.configure_topic(topic, long_running=True)
    opened = threading.Event()

    class Ranked(PriorityScheduler):
        ranking = (high, low)

        def manage(self) -> None:
            if opened.is_set():  # hold everything until both backlogs are in
                super().manage()

    order: list[str] = []

    @app.job(topic=high)
    def urgent(n: int) -> None:
        order.append("high")

    @app.job(topic=low)
    def later(n: int) -> None:
        order.append("low")

    for n in range(3):
        later.delay(n)  # enqueued first
        urgent.delay(n)
    app.flush(10)
    worker = app.worker(concurrency=1, scheduler_class=Ranked)
    with worker:
        scheduler = worker.scheduler.scheduler
        assert isinstance(scheduler, Ranked)
        assert wait_until(lambda: {j.topic for j in scheduler.buffer} == {high, low}, timeout=30)
        opened.set()
        assert wait_until(lambda: len(order) == 6, timeout=30)
    assert order == ["high"] * 3 + ["low"] * 3
