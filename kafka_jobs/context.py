"""What a running job can ask about itself: `current_job()`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from kafka_jobs.errors import KafkaJobsError


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
