"""What processing code is given instead of the App: narrow interfaces, built by the Worker.

The executor, the failure policy and the process pool's children use a task
registry, the settings, the event bus and a record writer; the App offers all
of them, but handing over the whole App tied every processing module to it
(and `kafka_jobs.app` builds workers, so the imports went round in a circle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kafka_jobs.instrumentation.events import EventBus
    from kafka_jobs.options import FailurePolicy
    from kafka_jobs.processing.control import JobControl
    from kafka_jobs.processing.jobs import Job
    from kafka_jobs.results.writer import ResultWriter
    from kafka_jobs.settings import Settings
    from kafka_jobs.task import Task
    from kafka_jobs.wire import Headers


class TaskRegistry(Protocol):
    """Registered tasks by name (the App is one).

    Thread-safe to read from any thread: tasks are registered at import time,
    before a worker starts, and not changed while it runs.
    """

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Every registered task, by name."""

    def task(self, name: str) -> Task[Any, Any]:
        """The task called `name`; raises `UnknownTask` when there is none."""


class FailurePolicies(Protocol):
    """The retry policy and dead-letter topic of a record (the App is one).

    Thread-safe to read from any thread (a lookup in what was registered at start).
    """

    def failure_policy(self, topic: str, task_name: str | None) -> FailurePolicy:
        """Policy for a record of `task_name` (None: unknown) consumed from `topic`."""


class Delivery(Protocol):
    """A written record's acknowledgement (`EnqueuedJob` is one)."""

    def wait(self, timeout: float | None = None) -> object:
        """Block until the broker acknowledged it; raise `DeliveryError` if it failed."""

    @property
    def reported(self) -> bool:
        """True once the broker answered (acknowledged or refused): `wait` returns at once."""


class RecordWriter(Protocol):
    """Writes records, e.g. dead letters (`JobProducer` is one).

    Thread-safe: every worker thread writes through the same one.
    """

    def enqueue(
        self,
        topic: str,
        job_id: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> Delivery:
        """Start writing one record (to `partition`, else by key); `wait` on the result."""


class JobRunner(Protocol):
    """Runs jobs for the worker threads (`Executor` is one). Thread-safe."""

    def run(self, job: Job) -> bool:
        """Run the job; False when it was handed on and comes back later (async records)."""


@dataclass(frozen=True, slots=True)
class Processing:
    """What the executor needs from the app; immutable, so any thread may read it.

    tasks: looks up the task a record names.
    settings: the worker's settings (payload limit, delivery timeout, async
        concurrency; jobs' `current_job()` reads them too, e.g. for transactions).
    events: the event bus jobs' events are emitted on (thread-safe).
    secret: the signing secret dill payloads are checked with (None: unsigned).
    results: writes the outcomes of jobs that keep their result (None: no task does).
    policies: tells a dead-lettered outcome from a dropped one.
    control: the revocations in force (None: only expiry is checked).
    """

    tasks: TaskRegistry
    settings: Settings
    events: EventBus
    secret: bytes | None
    results: ResultWriter | None = None
    policies: FailurePolicies | None = None
    control: JobControl | None = None
