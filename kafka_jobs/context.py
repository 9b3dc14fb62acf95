"""What a running job can ask about itself: `current_job()`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kafka_jobs.errors import KafkaJobsError

if TYPE_CHECKING:
    from kafka_jobs.producer import EnqueuedJob


@dataclass(frozen=True, slots=True)
class JobContext:
    """The record and worker state behind the job running on this thread."""

    task: str
    job_id: str
    topic: str
    partition: int
    offset: int
    attempt: int
    key: bytes | None
    headers: Mapping[str, bytes | None]
    _partition_revoked: threading.Event
    _worker_stopping: threading.Event
    _children: list[EnqueuedJob] = field(default_factory=list)

    def revoked(self) -> bool:
        """True once this process lost the job's partition; the job should wrap up."""
        return self._partition_revoked.is_set()

    def stopping(self) -> bool:
        """True once the worker is shutting down; a long job may return early."""
        return self._worker_stopping.is_set()


_current: ContextVar[JobContext | None] = ContextVar("kafka_jobs_current_job", default=None)


def current_job() -> JobContext:
    """The context of the job running on this thread; raises outside a job."""
    context = _current.get()
    if context is None:
        raise KafkaJobsError("current_job() called outside a running job")
    return context


def _set_current(context: JobContext | None) -> None:
    _current.set(context)


def _enqueued_from_job(handle: EnqueuedJob) -> None:
    """Note a job enqueued by the running job: it must be acknowledged before the parent is done."""
    context = _current.get()
    if context is not None:
        context._children.append(handle)
