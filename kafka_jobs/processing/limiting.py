"""Holding a job whose task is over its rate limit, without holding a worker thread.

Called by the executor before a record's task runs. When the task's token is
not due yet the record waits, and so do the records after it in its partition
(or lane), but never on a worker thread, and it is not an attempt, a failure
or a retry:

- a job that does not hold back polling (a long-running topic's job, or one
  re-queued below) is suspended: a `Waker` thread hands it back to the queue
  when the token is due (or at once when the worker stops or the partition is
  lost), so it goes on from that record with its records still in memory;
- a regular (blocking) job or lane ends at that record with `rate_limited`
  set: the listener re-queues the rest of its records as a job that does not
  hold back polling, with the partition paused meanwhile
  (`worker.throttling.requeue`); the other lanes of its batch go on.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.processing.calls import SUSPENDED, _Suspended
from kafka_jobs.processing.failures import RetryLater
from kafka_jobs.processing.jobs import Job
from kafka_jobs.processing.limits import Rate, RateLimiter

WAKER_CHECK = 0.1
"""Seconds between the waker's looks at stopping workers and lost partitions."""


class Waker:
    """Hands suspended jobs back to the queue when due (its own daemon thread).

    Thread-safe. The thread starts on the first `wake_at` and ends when nothing
    waits any more. A job is handed back early when `stopping` is set or its
    partition is lost, so shutdowns and revocations never wait out a token.
    """

    def __init__(self, resume: Callable[[Job], None], stopping: threading.Event) -> None:
        self._resume = resume
        self._stopping = stopping
        self._cond = threading.Condition()
        self._waiting: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def wake_at(self, job: Job, due: float) -> None:
        """Resume `job` at monotonic time `due`."""
        with self._cond:
            heapq.heappush(self._waiting, (due, next(self._order), job))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kafka-jobs-rate-limit-waker", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    self._thread = None
                    return
                now = time.monotonic()
                ready = self._take_ready(now)
                if not ready:
                    due = self._waiting[0][0]
                    self._cond.wait(min(due - now, WAKER_CHECK))
                    continue
            for job in ready:  # outside the lock: resume takes the queue's lock
                self._resume(job)

    def _take_ready(self, now: float) -> list[Job]:
        waiting = self._waiting
        if self._stopping.is_set() or any(job.state.revoked for _, _, job in waiting):
            ready = [job for _, _, job in waiting if self._stopping.is_set() or job.state.revoked]
            self._waiting = [entry for entry in waiting if entry[2] not in ready]
            heapq.heapify(self._waiting)
        else:
            ready = []
        while self._waiting and self._waiting[0][0] <= now:
            ready.append(heapq.heappop(self._waiting)[2])
        return ready


class RateLimits:
    """The executor's rate-limit check. Thread-safe: shared by every worker thread.

    One token bucket per task in this worker (`RateLimiter`); `job.rate_limited`
    is emitted each time a job is held.
    """

    def __init__(
        self,
        events: EventBus,
        stopping: threading.Event,
        resume: Callable[[Job], None] | None,
    ) -> None:
        self.limiter = RateLimiter()
        self._events = events
        self._waker = None if resume is None else Waker(resume, stopping)

    def hold(
        self, job: Job, offset: int, task: str, job_id: str, rate: Rate
    ) -> RetryLater | _Suspended | None:
        """None when the record may start now; else how its job waits for the token."""
        now = time.monotonic()
        wait = self.limiter.wait(task, rate, now)
        if wait <= 0.0:
            return None
        self._events.emit(
            "job.rate_limited",
            topic=job.topic,
            partition=job.partition,
            offset=offset,
            job_id=job_id,
            task=task,
            rate_limit=rate.text,
            delay=wait,
        )
        if self._waker is None:
            # Nothing could hand a re-queued job back: the partition pauses and fetches
            # the record again when due, as for a retry (a lane's batch runs sequentially).
            if job.batch is not None:
                job.batch.collapsed.set()
                return RetryLater(0.0)
            return RetryLater(wait)
        if not job.blocking:
            self._waker.wake_at(job, now + wait)
            return SUSPENDED
        job.rate_limited = True  # the listener re-queues the rest without blocking polling
        return RetryLater(wait)
