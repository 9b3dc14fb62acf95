"""Schedulers decide when jobs handed over by listeners enter the jobs queue.

A scheduler is built with the queue (`Scheduler(queue)`). Every call into it is
serialised by one lock (`SerializedScheduler`), so a scheduler keeps plain state
and needs no locking of its own. Listener threads call the `schedule_*` methods;
worker threads and listener ticks call `manage()`; calls must be fast and must
never block. Every job handed to a scheduler must end up `put` on the queue,
except after `clear(group_id)`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence

from kafka_jobs.errors import ConfigurationError
from kafka_jobs.processing.jobs import Job
from kafka_jobs.processing.queue import JobsQueue

log = logging.getLogger("kafka_jobs.scheduler")


class Scheduler:
    """Base scheduler: FIFO for every kind of job. Override what you need."""

    def __init__(self, queue: JobsQueue) -> None:
        self.queue = queue

    def schedule_consumption(self, jobs: Sequence[Job]) -> None:
        """New consumption jobs (one per partition batch) are ready."""
        for job in jobs:
            self.queue.put(job)

    def schedule_revocation(self, jobs: Sequence[Job]) -> None:
        """Revocation jobs (a partition was revoked or lost): FIFO by default."""
        for job in jobs:
            self.queue.put(job)

    def schedule_shutdown(self, jobs: Sequence[Job]) -> None:
        """Shutdown jobs (the worker is stopping): FIFO by default."""
        for job in jobs:
            self.queue.put(job)

    def schedule_idle(self, jobs: Sequence[Job]) -> None:
        """Idle jobs (a poll brought nothing for these partitions): FIFO by default."""
        for job in jobs:
            self.queue.put(job)

    def schedule_periodic(self, jobs: Sequence[Job]) -> None:
        """Periodic jobs (a periodic hook is due): FIFO by default."""
        for job in jobs:
            self.queue.put(job)

    def manage(self) -> None:
        """Called after every finished job and on every tick; stateless schedulers do nothing."""

    def clear(self, group_id: str) -> list[Job]:
        """Drop and return the unscheduled jobs of a group whose client is being reset."""
        return []


SCHEDULE_METHODS = {
    "consumption": "schedule_consumption",
    "revocation": "schedule_revocation",
    "shutdown": "schedule_shutdown",
    "idle": "schedule_idle",
    "periodic": "schedule_periodic",
}


class FifoScheduler(Scheduler):
    """Queues jobs in the order they arrive (the default)."""


class SerializedScheduler:
    """Wraps a scheduler so each call holds one lock. Thread-safe."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._lock = threading.Lock()

    def schedule_consumption(self, jobs: Sequence[Job]) -> None:
        """Serialised `Scheduler.schedule_consumption`."""
        self.schedule("consumption", jobs)

    def schedule(self, kind: str, jobs: Sequence[Job]) -> None:
        """Hand jobs of one kind to the matching `schedule_*` method, serialised.

        A scheduler that raises must not strand jobs (their group would never poll
        again): the error is logged with the method name and the jobs it did not
        queue are queued FIFO.
        """
        method = SCHEDULE_METHODS[kind]
        with self._lock:
            try:
                getattr(self.scheduler, method)(jobs)
            except Exception:
                log.exception(
                    "%s.%s failed; queueing this batch in arrival order",
                    type(self.scheduler).__name__,
                    method,
                )
                for job in jobs:
                    self.scheduler.queue.put_if_new(job)

    def manage(self) -> None:
        """Serialised `Scheduler.manage`."""
        with self._lock:
            self.scheduler.manage()

    def clear(self, group_id: str) -> list[Job]:
        """Serialised `Scheduler.clear`."""
        with self._lock:
            return self.scheduler.clear(group_id)


def load_scheduler(spec: str) -> type[Scheduler]:
    """The scheduler class named by "module:Class" (CLI `--scheduler`, `KAFKA_JOBS_SCHEDULER`)."""
    module_name, _, name = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"scheduler {spec!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ConfigurationError(f"scheduler {spec!r} is not a kafka_jobs Scheduler subclass")
    return found
