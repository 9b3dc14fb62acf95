"""Worker threads: take jobs from the queue, run them, always report them finished."""

from __future__ import annotations

import logging
import threading

from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.processing.jobs import Job
from kafka_jobs.processing.ports import JobRunner
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import SerializedScheduler
from kafka_jobs.processing.timelimits import Abandoned

log = logging.getLogger("kafka_jobs.worker")


class ThreadPool:
    """N daemon threads running jobs from the queue.

    A thread never dies of a job: anything escaping the executor is reported as
    a `worker.error` event and the job is still completed, so its listener never
    waits forever. Threads are daemons so a shutdown that timed out can exit.
    """

    def __init__(
        self,
        size: int,
        queue: JobsQueue,
        executor: JobRunner,
        scheduler: SerializedScheduler,
        events: EventBus,
    ) -> None:
        self.queue = queue
        self.executor = executor
        self.scheduler = scheduler
        self.events = events
        self.threads = [
            threading.Thread(target=self._work, name=f"kafka-jobs-worker-{n}", daemon=True)
            for n in range(size)
        ]
        self._replaced = 0

    def start(self) -> None:
        """Start every thread."""
        for thread in self.threads:
            thread.start()

    def take_over(self, job: Job, abandoned: int) -> None:
        """A new thread goes on with `job`, whose thread `abandoned` (an ident) is left behind.

        For a job past its hard time limit (or terminated): its thread stays stuck
        in the job, so the pool would lose a thread for each such job otherwise.
        """
        self.threads = [t for t in self.threads if t.ident != abandoned]
        self._replaced += 1
        thread = threading.Thread(
            target=self._work, name=f"kafka-jobs-worker-r{self._replaced}", daemon=True
        )
        self.threads.append(thread)
        self.queue.suspend(job)  # not busy on the abandoned thread any more
        self.queue.resume(job)  # first in line: its partition waits for it
        thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the threads to end after the queue was closed."""
        for thread in self.threads:
            thread.join(timeout)

    def _work(self) -> None:
        queue = self.queue
        while True:
            job = queue.get()
            if job is None:
                return
            finished = True
            try:
                finished = self.executor.run(job)
            except Abandoned:
                return  # the job went on on a new thread (`take_over`); this one ends
            except BaseException as error:  # the thread must survive anything a job throws
                log.exception("internal error while running %r", job)
                self.events.emit("worker.error", where="executor", error=error)
            if finished:
                queue.complete(job)
            else:  # an async record runs on the event loop; the job comes back
                queue.suspend(job)
            try:
                self.scheduler.manage()
            except Exception as error:
                log.exception("scheduler.manage() failed")
                self.events.emit("worker.error", where="scheduler", error=error)
