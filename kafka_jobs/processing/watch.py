"""The executor's side of time limits and `terminate=True`: watched runs, and ending them.

Every job run is watched (`timelimits.Running`), with or without limits, so a
revocation with ``terminate=True`` can end it wherever it runs. How an ended
run's job goes on depends on where it ran:

- thread: its thread is abandoned (`Abandoned` ends it when the job returns, its
  outcome discarded) and a new worker thread concludes the record with the
  error and goes on with the partition's next records (`take_over`);
- process pool: the worker thread waiting for the child kills it and raises
  the error (`ProcessPool.call`); the child is replaced;
- async: the coroutine is cancelled and the job resumes at once with the error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from kafka_jobs.processing.timelimits import (
    RunKind,
    Running,
    TimeLimits,
    Watchdog,
    resolve,
)

if TYPE_CHECKING:
    from kafka_jobs.processing.calls import Call
    from kafka_jobs.processing.jobs import Job
    from kafka_jobs.processing.ports import Processing
    from kafka_jobs.task import Task

log = logging.getLogger("kafka_jobs.worker")

_NONE = TimeLimits()


class JobWatch:
    """Starts watched runs with their limits; ends them when a limit or `terminate` says so.

    processing: the app's settings hold the default limits; events get
        `job.time_limited`.
    topic_limits: each topic's own limits (`configure_topic`).
    resume: hands an async record's job back to a worker thread.
    """

    def __init__(
        self,
        processing: Processing,
        topic_limits: Mapping[str, TimeLimits] | None = None,
        resume: Callable[[Job], None] | None = None,
    ) -> None:
        settings = processing.settings
        self.watchdog = Watchdog(processing.events, self._ended)
        self._app = TimeLimits(settings.soft_time_limit, settings.time_limit)
        self._topics = dict(topic_limits or {})
        self._cache: dict[tuple[str, str], TimeLimits] = {}
        self._resume = resume
        self._take_over: Callable[[Job, int], None] | None = None

    def set_take_over(self, take_over: Callable[[Job, int], None]) -> None:
        """How an abandoned thread's job gets a new thread: `take_over(job, old_thread_id)`.

        Without it a thread job past its hard limit fails only once it returns.
        """
        self._take_over = take_over
        self.watchdog.abandon_threads = True

    def limits(self, task: Task[..., object], topic: str) -> TimeLimits | None:
        """The limits of `task`'s jobs consumed from `topic` (None: none)."""
        key = (task.name, topic)
        limits = self._cache.get(key)
        if limits is None:
            limits = (
                _NONE
                if task.bookkeeping
                else resolve(task.options.time_limits, self._topics.get(topic), self._app)
            )
            self._cache[key] = limits
        return limits if limits.any else None

    def begin(self, job: Job, call: Call, task: Task[..., object], kind: RunKind) -> Running:
        """A run about to start, watched (`watchdog.start`) by the caller once it can be ended."""
        running = Running(call.envelope.job_id, self.limits(task, job.topic), kind)
        running.context = call.context
        running.job = job
        running.call = call
        if kind == "thread":
            running.thread_id = threading.get_ident()
        return running

    def _ended(self, running: Running, error: BaseException) -> None:
        """A run was ended (watchdog or revocation thread): let its job go on."""
        job = cast("Job", running.job)
        call = cast("Call", running.call)
        if running.abandoned:
            assert self._take_over is not None
            log.error(
                "job %s on %s[%d] ended (%s): its thread is abandoned, a new one goes on",
                running.job_id,
                job.topic,
                job.partition,
                error,
            )
            call.error = error
            job.pending = call  # the new thread concludes the record with `error`
            self._take_over(job, running.thread_id)
        elif running.kind == "async":
            log.error("async job %s ended (%s): cancelled", running.job_id, error)
            if running.handle is not None:
                running.handle.cancel()
            call.error = error
            if self._resume is not None:
                self._resume(job)  # job.pending is this call already
        else:
            log.error("job %s ended (%s)", running.job_id, error)


class GuardedMark:
    """`Job.mark_through` for a manual-offsets job, ignored once its run was ended.

    An abandoned thread's job may call `mark_as_consumed()` after a new thread took
    its partition over: those records are not its to mark any more.
    """

    __slots__ = ("job", "running")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.running: Running | None = None

    def __call__(self, offset: int) -> None:
        """Mark the job's records through `offset`, unless its run was ended."""
        running = self.running
        if running is not None and running.ended:
            log.warning(
                "job %s was ended: its mark_as_consumed(%d) is ignored", running.job_id, offset
            )
            return
        self.job.mark_through(offset)
