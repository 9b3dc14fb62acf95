"""Schedulers: FIFO by default, and every call serialised by `SerializedScheduler`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import FifoScheduler, Scheduler, SerializedScheduler

JOIN = 10.0


def make_jobs(count: int, group: str = "g") -> list[Job]:
    return [Job(group, PartitionState("t", n), []) for n in range(count)]


def drain(queue: JobsQueue) -> list[Job]:
    jobs = []
    while (job := queue.get(0)) is not None:
        jobs.append(job)
    return jobs


# --- FifoScheduler ---------------------------------------------------------------------------


def test_fifo_queues_in_arrival_order_across_calls() -> None:
    queue = JobsQueue()
    scheduler = FifoScheduler(queue)
    first, second = make_jobs(3), make_jobs(2)
    scheduler.schedule_consumption(first)
    scheduler.schedule_consumption(second)
    assert drain(queue) == first + second


def test_fifo_keeps_nothing_back() -> None:
    queue = JobsQueue()
    scheduler = FifoScheduler(queue)
    jobs = make_jobs(2)
    scheduler.schedule_consumption(jobs)
    scheduler.manage()
    assert scheduler.clear("g") == []
    assert queue.statistics == {"busy": 0, "enqueued": 2, "waiting": 0}
    assert isinstance(scheduler, Scheduler)


# --- SerializedScheduler ------------------------------------------------------------------------


class GateScheduler(Scheduler):
    """Logs entries and exits; optionally holds the first call open until released."""

    def __init__(self, queue: JobsQueue) -> None:
        super().__init__(queue)
        self.log: list[str] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self.hold_first = False

    def _enter(self, what: str) -> None:
        self.log.append(f"enter {what}")
        if self.hold_first:
            self.hold_first = False
            self.inside.set()
            assert self.release.wait(JOIN)
        self.log.append(f"exit {what}")

    def schedule_consumption(self, jobs: Sequence[Job]) -> None:
        self._enter("schedule")
        super().schedule_consumption(jobs)

    def manage(self) -> None:
        self._enter("manage")

    def clear(self, group_id: str) -> list[Job]:
        self._enter("clear")
        return []


def test_serialized_forwards_every_call() -> None:
    queue = JobsQueue()
    inner = GateScheduler(queue)
    scheduler = SerializedScheduler(inner)
    jobs = make_jobs(2)
    scheduler.schedule_consumption(jobs)
    scheduler.manage()
    assert scheduler.clear("g") == []
    assert inner.log == [
        "enter schedule",
        "exit schedule",
        "enter manage",
        "exit manage",
        "enter clear",
        "exit clear",
    ]
    assert drain(queue) == jobs


@pytest.mark.parametrize("second_call", ["manage", "clear", "schedule"])
def test_a_call_waits_while_another_is_inside(second_call: str) -> None:
    inner = GateScheduler(JobsQueue())
    inner.hold_first = True
    scheduler = SerializedScheduler(inner)
    calls = {
        "manage": scheduler.manage,
        "clear": lambda: scheduler.clear("g"),
        "schedule": lambda: scheduler.schedule_consumption([]),
    }
    first = threading.Thread(target=scheduler.schedule_consumption, args=([],), daemon=True)
    first.start()
    assert inner.inside.wait(JOIN)

    started = threading.Event()

    def call() -> None:
        started.set()
        calls[second_call]()

    second = threading.Thread(target=call, daemon=True)
    second.start()
    assert started.wait(JOIN)
    second.join(0.05)  # bounded look: unserialised, it would be inside by now
    assert second.is_alive()
    assert inner.log == ["enter schedule"]

    inner.release.set()
    first.join(JOIN)
    second.join(JOIN)
    assert not first.is_alive() and not second.is_alive()
    assert inner.log == [
        "enter schedule",
        "exit schedule",
        f"enter {second_call}",
        f"exit {second_call}",
    ]


class OverlapDetector(Scheduler):
    """Counts calls that found another call already inside."""

    def __init__(self, queue: JobsQueue) -> None:
        super().__init__(queue)
        self.entry = threading.Lock()
        self.overlaps = 0
        self.calls = 0

    def _check(self) -> None:
        if not self.entry.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            self.calls += 1
            time.sleep(0)  # yield the GIL: an unserialised caller would barge in here
        finally:
            self.entry.release()

    def schedule_consumption(self, jobs: Sequence[Job]) -> None:
        self._check()
        super().schedule_consumption(jobs)

    def manage(self) -> None:
        self._check()

    def clear(self, group_id: str) -> list[Job]:
        self._check()
        return []


def test_concurrent_callers_never_overlap() -> None:
    queue = JobsQueue()
    inner = OverlapDetector(queue)
    scheduler = SerializedScheduler(inner)
    rounds, threads = 300, 8

    def hammer(n: int) -> None:
        for i in range(rounds):
            match (n + i) % 3:
                case 0:
                    scheduler.schedule_consumption(make_jobs(1))
                case 1:
                    scheduler.manage()
                case _:
                    scheduler.clear("g")

    workers = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(JOIN)
        assert not thread.is_alive()
    assert inner.overlaps == 0
    assert inner.calls == rounds * threads
    assert queue.statistics["enqueued"] == sum(
        1 for n in range(threads) for i in range(rounds) if (n + i) % 3 == 0
    )


def test_a_raising_scheduler_releases_the_lock() -> None:
    class Broken(Scheduler):
        def manage(self) -> None:
            raise RuntimeError("boom")

    queue = JobsQueue()
    scheduler = SerializedScheduler(Broken(queue))
    with pytest.raises(RuntimeError, match="boom"):
        scheduler.manage()
    jobs = make_jobs(1)
    scheduler.schedule_consumption(jobs)  # would deadlock if the lock were still held
    assert drain(queue) == jobs


def test_a_raising_scheduler_does_not_strand_jobs() -> None:
    """The batch is queued FIFO after the failure, each job exactly once."""

    class Broken(Scheduler):
        def schedule_consumption(self, jobs):  # type: ignore[no-untyped-def]
            self.queue.put(jobs[0])
            raise RuntimeError("scheduler bug")

    queue = JobsQueue()
    jobs = [Job("g", PartitionState("t", p), []) for p in range(3)]
    SerializedScheduler(Broken(queue)).schedule_consumption(jobs)
    assert [queue.get(0) for _ in range(3)] == jobs
    assert queue.get(0) is None
