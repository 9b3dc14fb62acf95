"""Example schedulers for `kafka-jobs worker --scheduler examples.schedulers:NAME`.

Each one is a small `Scheduler` subclass. The worker serialises every call into a
scheduler, so they keep plain lists and need no locks; every job they are given
is queued eventually (`put`), and withheld ones are `lock`ed so that a regular
job's subscription group does not poll past it.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence

from kafka_jobs import Job, JobsQueue, Scheduler

__all__ = [
    "FairShareScheduler",
    "LongestJobFirstScheduler",
    "OneAtATimeScheduler",
    "PriorityScheduler",
]


class _BufferingScheduler(Scheduler):
    """Holds jobs back (locked) and releases them from `manage()`."""

    def __init__(self, queue: JobsQueue) -> None:
        super().__init__(queue)
        self.buffer: list[Job] = []
        self.released: list[Job] = []

    def schedule_consumption(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.queue.lock(job)
            self.buffer.append(job)
        self.manage()

    def clear(self, group_id: str) -> list[Job]:
        dropped = [job for job in self.buffer if job.group_id == group_id]
        self.buffer = [job for job in self.buffer if job.group_id != group_id]
        return dropped

    def release(self, job: Job) -> None:
        self.buffer.remove(job)
        self.released.append(job)
        self.queue.put(job)

    def running(self) -> list[Job]:
        """Released jobs that have not finished (forgets the finished ones)."""
        self.released = [job for job in self.released if not job.finished]
        return self.released


class OneAtATimeScheduler(_BufferingScheduler):
    """Runs a single job at a time, whatever the concurrency, in arrival order."""

    def manage(self) -> None:
        if self.buffer and not self.running():
            self.release(self.buffer[0])


class LongestJobFirstScheduler(_BufferingScheduler):
    """Starts the jobs expected to take longest first: observed p95 per record x batch size.

    Topics never seen yet count as longest, so they get measured early.
    """

    def __init__(self, queue: JobsQueue) -> None:
        super().__init__(queue)
        self.durations: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=200))

    def expected(self, job: Job) -> float:
        window = self.durations.get(job.topic)
        if not window:
            return math.inf
        ordered = sorted(window)
        return ordered[int(0.95 * (len(ordered) - 1))] * job.size

    def manage(self) -> None:
        for job in self.released:  # finished ones are measured once: running() drops them
            if job.finished:
                self.durations[job.topic].extend(job.durations)
        self.running()
        self.buffer.sort(key=self.expected, reverse=True)
        while self.buffer and len(self.running()) < self.queue.concurrency:
            self.release(self.buffer[0])


class FairShareScheduler(_BufferingScheduler):
    """Splits the worker threads evenly across the topics this process is assigned.

    With two assigned topics and 4 threads, each topic runs at most 2 jobs at once;
    when only one topic is assigned, it gets all 4 (`queue.assignments()`).
    """

    def per_topic(self) -> int:
        topics = max(1, len(self.queue.assignments()))
        return max(1, self.queue.concurrency // topics)

    def manage(self) -> None:
        limit = self.per_topic()
        busy: defaultdict[str, int] = defaultdict(int)
        for job in self.running():
            busy[job.topic] += 1
        for job in list(self.buffer):
            if busy[job.topic] < limit:
                self.release(job)
                busy[job.topic] += 1


class PriorityScheduler(_BufferingScheduler):
    """Releases jobs of higher-ranked topics first (`ranking`: topics, most important first)."""

    ranking: Sequence[str] = ()

    def rank(self, job: Job) -> int:
        try:
            return list(self.ranking).index(job.topic)
        except ValueError:
            return len(self.ranking)

    def manage(self) -> None:
        self.buffer.sort(key=self.rank)  # stable: arrival order within a topic
        while self.buffer and len(self.running()) < self.queue.concurrency:
            self.release(self.buffer[0])
