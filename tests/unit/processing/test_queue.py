"""JobsQueue: FIFO, locking, per-group blocking and finished-job bookkeeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue

JOIN = 10.0  # generous bound on joins: only reached when something is broken


def make_job(group: str = "g", blocking: bool = True, partition: int = 0) -> Job:
    return Job(group, PartitionState("t", partition), [], blocking=blocking)


def wait_for_waiter(queue: JobsQueue, count: int = 1) -> None:
    """Wait until `count` threads are blocked on the queue's condition (CPython internals)."""
    deadline = time.monotonic() + JOIN
    while len(queue._cond._waiters) < count:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "no thread started waiting on the queue"
        time.sleep(0.001)


class Background:
    """Runs `fn` on a thread and keeps its result."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        self.result = fn()

    def join(self) -> Any:
        self.thread.join(JOIN)
        assert not self.thread.is_alive(), "background call did not return"
        return self.result


@pytest.fixture
def queue() -> JobsQueue:
    return JobsQueue()


# --- put / get ---------------------------------------------------------------------------


def test_get_returns_jobs_in_put_order(queue: JobsQueue) -> None:
    jobs = [make_job(partition=n) for n in range(5)]
    for job in jobs:
        queue.put(job)
    assert [queue.get(0) for _ in jobs] == jobs


def test_get_times_out_on_an_empty_queue(queue: JobsQueue) -> None:
    assert queue.get(0) is None
    assert queue.get(0.01) is None


def test_get_blocks_until_put(queue: JobsQueue) -> None:
    getter = Background(queue.get)
    wait_for_waiter(queue)
    job = make_job()
    queue.put(job)
    assert getter.join() is job


def test_close_wakes_every_idle_get(queue: JobsQueue) -> None:
    getters = [Background(queue.get) for _ in range(3)]
    wait_for_waiter(queue, 3)
    queue.close()
    assert [getter.join() for getter in getters] == [None, None, None]
    assert queue.get() is None  # closed and empty: returns at once


def test_closed_queue_still_hands_out_ready_jobs(queue: JobsQueue) -> None:
    jobs = [make_job(), make_job()]
    for job in jobs:
        queue.put(job)
    queue.close()
    assert queue.get() is jobs[0]
    assert queue.get() is jobs[1]
    assert queue.get() is None


# --- lock / unlock / statistics ---------------------------------------------------------------


def test_statistics_follow_put_lock_get_complete(queue: JobsQueue) -> None:
    a, b, c = make_job(), make_job(), make_job()
    assert queue.statistics == {"busy": 0, "enqueued": 0, "waiting": 0}
    queue.put(a)
    queue.put(b)
    queue.lock(c)
    assert queue.statistics == {"busy": 0, "enqueued": 2, "waiting": 1}
    assert queue.get(0) is a
    assert queue.statistics == {"busy": 1, "enqueued": 1, "waiting": 1}
    queue.put(c)  # an implicit unlock
    assert queue.statistics == {"busy": 1, "enqueued": 2, "waiting": 0}
    queue.complete(a)
    assert queue.statistics == {"busy": 0, "enqueued": 2, "waiting": 0}


def test_unlock_releases_without_queueing(queue: JobsQueue) -> None:
    job = make_job()
    queue.lock(job)
    queue.lock(job)
    assert queue.statistics["waiting"] == 1
    queue.unlock(job)
    assert queue.statistics == {"busy": 0, "enqueued": 0, "waiting": 0}
    queue.unlock(job)  # unlocking twice is harmless
    assert queue.get(0) is None


def test_locked_jobs_are_not_handed_out(queue: JobsQueue) -> None:
    locked, ready = make_job(), make_job()
    queue.lock(locked)
    queue.put(ready)
    assert queue.get(0) is ready
    assert queue.get(0) is None


# --- track / wait_unblocked / wait_finished --------------------------------------------------


def test_unknown_or_idle_group_is_unblocked(queue: JobsQueue) -> None:
    assert queue.wait_unblocked("nobody", 0)
    assert queue.wait_finished("nobody", 0)
    assert queue.unfinished("nobody") == 0


def test_only_blocking_jobs_of_the_same_group_block(queue: JobsQueue) -> None:
    blocking = make_job("g1")
    relaxed = make_job("g1", blocking=False)
    other = make_job("g2")
    queue.track([blocking, relaxed, other])
    assert not queue.wait_unblocked("g1", 0.01)
    assert not queue.wait_unblocked("g2", 0.01)
    assert queue.unfinished("g1") == 2

    queue.put(blocking)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    assert queue.wait_unblocked("g1", 0)
    assert not queue.wait_unblocked("g2", 0)
    assert queue.unfinished("g1") == 1
    assert not queue.wait_finished("g1", 0.01)  # the non-blocking job is still unfinished


def test_group_of_non_blocking_jobs_never_blocks(queue: JobsQueue) -> None:
    queue.track([make_job(blocking=False), make_job(blocking=False)])
    assert queue.wait_unblocked("g", 0)
    assert queue.unfinished("g") == 2


def test_a_locked_blocking_job_still_blocks_its_group(queue: JobsQueue) -> None:
    job = make_job()
    queue.track([job])
    queue.lock(job)
    assert not queue.wait_unblocked("g", 0.01)
    queue.put(job)
    assert not queue.wait_unblocked("g", 0.01)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    assert queue.wait_unblocked("g", 0)


def test_wait_unblocked_wakes_when_the_blocking_job_completes(queue: JobsQueue) -> None:
    job = make_job()
    queue.track([job])
    queue.put(job)
    assert queue.get(0) is job
    waiter = Background(lambda: queue.wait_unblocked("g", JOIN))
    wait_for_waiter(queue)
    queue.complete(job)
    assert waiter.join() is True


def test_wait_unblocked_ignores_completions_of_other_groups(queue: JobsQueue) -> None:
    mine, theirs = make_job("mine"), make_job("theirs")
    queue.track([mine, theirs])
    waiter = Background(lambda: queue.wait_unblocked("mine", JOIN))
    wait_for_waiter(queue)
    queue.put(theirs)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    wait_for_waiter(queue)  # woken by the notify, the waiter went back to waiting
    assert waiter.thread.is_alive()
    queue.put(mine)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    assert waiter.join() is True


def test_wait_finished_wakes_when_the_last_job_completes(queue: JobsQueue) -> None:
    jobs = [make_job(blocking=False), make_job()]
    queue.track(jobs)
    for job in jobs:
        queue.put(job)
    waiter = Background(lambda: queue.wait_finished("g", JOIN))
    wait_for_waiter(queue)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    assert waiter.join() is True
    assert queue.unfinished("g") == 0


# --- take_finished / forget ----------------------------------------------------------------------


def test_take_finished_returns_each_finished_job_once(queue: JobsQueue) -> None:
    a, b, other = make_job(), make_job(), make_job("other")
    queue.track([a, b, other])
    for job in (a, b, other):
        queue.put(job)
    assert queue.take_finished("g") == []
    for _ in range(3):
        queue.complete(queue.get(0))  # type: ignore[arg-type]
    assert a.finished and b.finished and other.finished
    assert queue.take_finished("g") == [a, b]
    assert queue.take_finished("g") == []
    assert queue.take_finished("other") == [other]


def test_forget_stops_counting_dropped_jobs(queue: JobsQueue) -> None:
    locked, buffered, relaxed = make_job(), make_job(), make_job(blocking=False)
    queue.track([locked, buffered, relaxed])
    queue.lock(locked)
    queue.forget("g", [locked, buffered, relaxed])
    assert queue.wait_unblocked("g", 0)
    assert queue.wait_finished("g", 0)
    assert queue.unfinished("g") == 0
    assert queue.statistics["waiting"] == 0
    assert locked.finished and buffered.finished and relaxed.finished
    assert queue.take_finished("g") == []  # forgotten jobs have no results to collect


def test_forget_skips_jobs_already_finished(queue: JobsQueue) -> None:
    done, dropped, running = make_job(), make_job(), make_job()
    queue.track([done, dropped, running])
    queue.put(done)
    queue.complete(queue.get(0))  # type: ignore[arg-type]
    queue.forget("g", [done, dropped])
    queue.forget("g", [dropped])  # twice: no double count
    assert queue.unfinished("g") == 1
    assert not queue.wait_unblocked("g", 0.01)


def test_forget_wakes_a_blocked_listener(queue: JobsQueue) -> None:
    job = make_job()
    queue.track([job])
    waiter = Background(lambda: queue.wait_unblocked("g", JOIN))
    wait_for_waiter(queue)
    queue.forget("g", [job])
    assert waiter.join() is True


# --- many threads -----------------------------------------------------------------------------


def test_workers_and_a_listener_agree_on_every_job(queue: JobsQueue) -> None:
    jobs = [make_job(blocking=n % 3 == 0, partition=n) for n in range(300)]
    ran: list[Job] = []
    ran_lock = threading.Lock()

    def work() -> None:
        while (job := queue.get()) is not None:
            with ran_lock:
                ran.append(job)
            queue.complete(job)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    for thread in workers:
        thread.start()
    for start in range(0, len(jobs), 30):
        batch = jobs[start : start + 30]
        assert queue.wait_unblocked("g", JOIN)
        queue.track(batch)
        for job in batch:
            queue.put(job)
    assert queue.wait_finished("g", JOIN)
    queue.close()
    for thread in workers:
        thread.join(JOIN)
        assert not thread.is_alive()
    assert sorted(ran, key=lambda j: j.partition) == jobs
    assert sorted(queue.take_finished("g"), key=lambda j: j.partition) == jobs
    assert queue.statistics == {"busy": 0, "enqueued": 0, "waiting": 0}
