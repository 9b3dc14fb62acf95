"""The example schedulers' policies, with real jobs and queue but no broker."""

from __future__ import annotations

from examples.schedulers import (
    FairShareScheduler,
    LongestJobFirstScheduler,
    OneAtATimeScheduler,
    PriorityScheduler,
)
from kafka_jobs.worker import Job, JobsQueue, PartitionState


class FakeRecord:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


def job(topic: str, size: int = 1, group: str = "g") -> Job:
    return Job(group, PartitionState(topic, 0), [FakeRecord(i) for i in range(size)])  # type: ignore[misc]


def drain(queue: JobsQueue) -> list[Job]:
    taken = []
    while (found := queue.get(0)) is not None:
        taken.append(found)
    return taken


def finish(queue: JobsQueue, jobs: list[Job]) -> None:
    for done in jobs:
        queue.complete(done)


def test_one_at_a_time() -> None:
    queue = JobsQueue()
    scheduler = OneAtATimeScheduler(queue)
    jobs = [job("t") for _ in range(3)]
    scheduler.schedule_consumption(jobs)
    assert queue.statistics == {"busy": 0, "enqueued": 1, "waiting": 2}
    first = drain(queue)
    assert first == jobs[:1]
    scheduler.manage()
    assert drain(queue) == [], "nothing more while one runs"
    finish(queue, first)
    scheduler.manage()
    assert drain(queue) == jobs[1:2]


def test_longest_job_first_uses_observed_times() -> None:
    queue = JobsQueue()
    queue.concurrency = 1
    scheduler = LongestJobFirstScheduler(queue)
    warm = [job("fast"), job("slow")]
    scheduler.schedule_consumption(warm)
    for ran in drain(queue):
        ran.durations = [0.001] if ran.topic == "fast" else [0.5]
        finish(queue, [ran])
        scheduler.manage()
    drain(queue)
    finish(queue, [j for j in warm if not j.finished])
    scheduler.manage()
    batch = [job("fast", size=10), job("slow", size=1), job("fast", size=1)]
    scheduler.schedule_consumption(batch)
    order = []
    for _ in range(3):
        taken = drain(queue)
        order.extend(taken)
        finish(queue, taken)
        scheduler.manage()
    assert [j.topic for j in order] == ["slow", "fast", "fast"]
    assert order[1].size == 10, "10 fast records outweigh one"


def test_fair_share_splits_threads_by_assigned_topics() -> None:
    queue = JobsQueue()
    queue.concurrency = 4
    queue.assignments = lambda: {"a": [0], "b": [0]}
    scheduler = FairShareScheduler(queue)
    scheduler.schedule_consumption([job("a") for _ in range(4)] + [job("b") for _ in range(4)])
    started = drain(queue)
    assert sorted(j.topic for j in started) == ["a", "a", "b", "b"]
    queue.assignments = lambda: {"a": [0]}  # b moved away: a may use all 4 threads
    scheduler.manage()
    released = drain(queue)
    running_a = [j for j in started + released if j.topic == "a"]
    assert len(running_a) == 4
    # b's jobs are released too: every job must be queued (a revoked one skips user code).
    assert sorted(j.topic for j in released) == ["a", "a", "b", "b"]


def test_priority_releases_ranked_topics_first() -> None:
    class Ranked(PriorityScheduler):
        ranking = ("high", "low")

    queue = JobsQueue()
    queue.concurrency = 1
    scheduler = Ranked(queue)
    scheduler.schedule_consumption([job("low"), job("other"), job("high"), job("high")])
    order = []
    for _ in range(4):
        taken = drain(queue)
        order.extend(j.topic for j in taken)
        finish(queue, taken)
        scheduler.manage()
    assert order == ["high", "high", "low", "other"]


def test_clear_drops_only_that_groups_buffered_jobs() -> None:
    queue = JobsQueue()
    scheduler = OneAtATimeScheduler(queue)
    jobs = [job("t", group="g1"), job("t", group="g2"), job("t", group="g1")]
    scheduler.schedule_consumption(jobs)
    dropped = scheduler.clear("g1")
    assert dropped == [jobs[2]]
    assert all(j.group_id == "g2" or j is jobs[0] for j in scheduler.buffer + scheduler.released)
