"""What a running job can ask about itself: `current_job()`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, NoReturn

from kafka_jobs.errors import KafkaJobsError, Retry

if TYPE_CHECKING:
    from kafka_jobs.processing.jobs import PartitionState
    from kafka_jobs.producer import EnqueuedJob
    from kafka_jobs.settings import Settings


MAX_USER_BYTES = 2000
"""Most UTF-8 bytes of offset metadata a job may give (the commit's own share is kept)."""


class JobContext:
    """The record and worker state behind the job running on this thread.

    Attributes: task, job_id, topic, partition, offset, attempt (1 for the first
    run), key (partition key bytes or None), headers (name -> bytes). Built by the
    worker once per record (a plain slotted class: cheaper than a dataclass);
    treat it as read-only.
    """

    __slots__ = (
        "_children",
        "_group_metadata",
        "_mark_through",
        "_partition_revoked",
        "_settings",
        "_state",
        "_worker_stopping",
        "attempt",
        "headers",
        "job_id",
        "key",
        "offset",
        "partition",
        "task",
        "topic",
    )

    def __init__(
        self,
        task: str,
        job_id: str,
        topic: str,
        partition: int,
        offset: int,
        attempt: int,
        key: bytes | None,
        headers: Mapping[str, bytes | None],
        partition_revoked: threading.Event,
        worker_stopping: threading.Event,
        mark_through: Callable[[int], None],
        settings: Settings | None = None,
        group_metadata: object | None = None,
        state: PartitionState | None = None,
    ) -> None:
        self.task = task
        self.job_id = job_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.attempt = attempt
        self.key = key
        self.headers = headers
        self._partition_revoked = partition_revoked
        self._worker_stopping = worker_stopping
        self._mark_through = mark_through
        self._settings = settings
        # Consumer-group metadata for transactions that commit this record's offset;
        # None where the offset cannot join a transaction (virtual partitions).
        self._group_metadata = group_metadata
        self._children: list[EnqueuedJob] = []
        self._state = state

    def __repr__(self) -> str:
        return (
            f"<JobContext {self.task} id={self.job_id} "
            f"{self.topic}[{self.partition}]@{self.offset} attempt={self.attempt}>"
        )

    @property
    def settings(self) -> Settings | None:
        """The settings of the worker running the job (None for a context built by hand)."""
        return self._settings

    @property
    def group_metadata(self) -> object | None:
        """Consumer-group metadata for a transaction that commits this record's offset.

        None where the offset cannot join a transaction (virtual partitions, the
        process pool, a context built by hand).
        """
        return self._group_metadata

    @property
    def children(self) -> list[EnqueuedJob]:
        """Jobs this job enqueued so far.

        Its offset counts as done only once they are acknowledged (the worker waits).
        """
        return self._children

    def revoked(self) -> bool:
        """True once this process lost the job's partition; the job should wrap up."""
        return self._partition_revoked.is_set()

    def stopping(self) -> bool:
        """True once the worker is shutting down; a long job may return early."""
        return self._worker_stopping.is_set()

    def retry(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Raise `Retry`: run this job again later (Celery's `self.retry`); see `Retry`.

        This run counts as an attempt; once none is left the job fails with `exc`.
        """
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)

    def mark_as_consumed(self, metadata: str | None = None) -> None:
        """Count this record, and the job's records before it, as done.

        On `manual_offsets` topics this is the only way a record becomes committable:
        a job that processes in steps marks its progress so a restart resumes there.
        Elsewhere it is harmless (records are marked when their job returns). Jobs
        this job enqueued are acknowledged first, so none is lost behind the mark.

        metadata: text stored with the partition's offset commit (at most
            2 000 UTF-8 bytes), read back with `offset_metadata()`, here or by the
            next owner of the partition. It stays until a job gives another. Under
            virtual partitions, `VirtualPartitions.offset_metadata_strategy` picks
            which one a commit carries.
        """
        if metadata is not None:
            if self._state is None:
                raise KafkaJobsError("offset metadata is not available here (process pool?)")
            size = len(metadata.encode())
            if size > MAX_USER_BYTES:
                raise ValueError(f"offset metadata is {size} bytes; the limit is {MAX_USER_BYTES}")
            self._state.give_metadata(self.offset, metadata)
        timeout = self._settings.delivery_timeout if self._settings is not None else 30.0
        for child in self._children:
            child.wait(timeout)
        self._mark_through(self.offset)

    def offset_metadata(self) -> str | None:
        """The job metadata of this partition's last offset commit known to this worker.

        Read from the broker when the partition was assigned, then updated by this
        worker's own commits. None when no job gave any. Brokers that do not
        return commit metadata (the embedded development broker) give None after
        a reassignment; the worker logs a warning when it finds that out.
        """
        if self._state is None:
            raise KafkaJobsError("offset metadata is not available here (process pool?)")
        return self._state.committed_metadata


_current: ContextVar[JobContext | None] = ContextVar("kafka_jobs_current_job", default=None)


def current_job() -> JobContext:
    """The context of the job running on this thread; raises outside a job."""
    context = _current.get()
    if context is None:
        raise KafkaJobsError("current_job() called outside a running job")
    return context


def current_job_or_none() -> JobContext | None:
    """The running job's context, or None outside a job."""
    return _current.get()


def set_current(context: JobContext | None) -> None:
    """Make `context` the running job's on this thread or task (pools call it around a job)."""
    _current.set(context)


def note_enqueued(handle: EnqueuedJob) -> None:
    """Note a job enqueued by the running job: it must be acknowledged before the parent is done."""
    context = _current.get()
    if context is not None:
        context._children.append(handle)
