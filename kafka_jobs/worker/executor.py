"""Runs a job's records on a worker thread: decode, look up, call, report the outcome."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from confluent_kafka import Message

from kafka_jobs.app import App
from kafka_jobs.context import JobContext, _set_current
from kafka_jobs.errors import NotDecodable, RecordRejected, RecordTooLarge
from kafka_jobs.task import Task
from kafka_jobs.wire import Envelope, decode
from kafka_jobs.worker.jobs import Job

log = logging.getLogger("kafka_jobs.worker")


Disposition = float | None
"""What a failure handler decided: None, the record is settled and its offset may be
committed; a number, run the record again after that many seconds (only its
partition waits)."""

INTERNAL_ERROR_RETRY_DELAY = 1.0


class FailureHandler(Protocol):
    """Decides what happens to a record that cannot run or whose job raised.

    Called on the worker thread that ran the record; returns a `Disposition`.
    Returning None settles the record, so a handler that writes a dead letter
    returns only once the write is acknowledged, or asks for a retry.
    """

    def rejected(self, record: Message, error: RecordRejected) -> Disposition:
        """The record is not a runnable job (undecodable, unknown task, too large...)."""

    def failed(
        self, record: Message, envelope: Envelope, error: BaseException, attempt: int
    ) -> Disposition:
        """The job's `attempt`-th run raised `error`."""


class LogFailures:
    """Logs the failure with its record's coordinates and settles the record."""

    def rejected(self, record: Message, error: RecordRejected) -> Disposition:
        """Log a record that cannot run."""
        log.error(
            "rejected record topic=%s partition=%s offset=%s reason=%s: %s",
            record.topic(),
            record.partition(),
            record.offset(),
            error.reason,
            error,
        )
        return None

    def failed(
        self, record: Message, envelope: Envelope, error: BaseException, attempt: int
    ) -> Disposition:
        """Log a job that raised."""
        log.error(
            "job failed topic=%s partition=%s offset=%s job_id=%s task=%s attempt=%d: %r",
            record.topic(),
            record.partition(),
            record.offset(),
            envelope.job_id,
            envelope.task,
            attempt,
            error,
            exc_info=error,
        )
        return None


class Executor:
    """Runs jobs. Thread-safe: shared by every worker thread, keeps no per-job state."""

    def __init__(self, app: App, failures: FailureHandler, stopping: threading.Event) -> None:
        self.app = app
        self.failures = failures
        self.stopping = stopping
        self._events = app.events
        self._max_bytes = app.settings.max_payload_bytes
        self._delivery_timeout = app.settings.delivery_timeout

    def run(self, job: Job) -> None:
        """Run the job's records in order; stop early if the partition is lost or the worker stops.

        Records not run stay out of `job.done_offsets`, so their offsets are never
        committed; a record to be retried sets `job.resume_from` and `job.retry_at`.
        """
        state = job.state
        done = job.done_offsets
        for record in job.records:
            offset = cast(int, record.offset())
            if state.revoked or self.stopping.is_set():
                self._events.emit(
                    "job.skipped", topic=job.topic, partition=job.partition, offset=offset
                )
                break
            retry_in = self.run_record(job, record)
            if retry_in is not None:
                job.resume_from = offset
                job.retry_at = time.monotonic() + retry_in
                break
            done.append(offset)

    def run_record(self, job: Job, record: Message) -> Disposition:
        """Run one record; failures go to the failure handler, never up to the caller."""
        try:
            envelope, task = self._decode(record)
        except RecordRejected as error:
            self._events.emit(
                "record.rejected",
                topic=job.topic,
                partition=job.partition,
                offset=record.offset(),
                error=error,
            )
            return self._settle(self.failures.rejected, record, error)
        offset = cast(int, record.offset())
        failures = job.state.failures
        attempt = envelope.attempt + failures.get(offset, 0)
        context = JobContext(
            envelope.task,
            envelope.job_id,
            job.topic,
            job.partition,
            offset,
            attempt,
            envelope.key,
            envelope.headers,
            job.state._revoked,
            self.stopping,
        )
        _set_current(context)
        started = time.perf_counter()
        try:
            task.fn(*envelope.args, **envelope.kwargs)
            if context._children:
                self._await_children(context)
        except BaseException as error:  # SystemExit from a job is a failure too, not a dead thread
            self._events.emit(
                "job.failed",
                topic=job.topic,
                partition=job.partition,
                offset=offset,
                job_id=envelope.job_id,
                task=envelope.task,
                error=error,
                attempt=attempt,
                duration=time.perf_counter() - started,
            )
            retry_in = self._settle(self.failures.failed, record, envelope, error, attempt)
            if retry_in is not None:
                failures[offset] = failures.get(offset, 0) + 1
            else:
                failures.pop(offset, None)
            return retry_in
        else:
            if failures:
                failures.pop(offset, None)
            if self._events.active:
                self._events.emit(
                    "job.succeeded",
                    topic=job.topic,
                    partition=job.partition,
                    offset=offset,
                    job_id=envelope.job_id,
                    task=envelope.task,
                    duration=time.perf_counter() - started,
                )
            return None
        finally:
            _set_current(None)

    def _decode(self, record: Message) -> tuple[Envelope, Task[..., object]]:
        try:
            value = record.value()
            if value is not None and len(value) > self._max_bytes:
                raise RecordTooLarge(f"value is {len(value)} bytes; the limit is {self._max_bytes}")
            envelope = decode(value, record.headers(), record.key())
            return envelope, self.app.task(envelope.task)
        except RecordRejected:
            raise
        except Exception as error:  # a decoder bug must not stall the partition
            raise NotDecodable(f"decoding failed: {error!r}") from error

    def _await_children(self, context: JobContext) -> None:
        """Jobs enqueued by this job must be acknowledged before its offset may be committed."""
        for child in context._children:
            child.wait(self._delivery_timeout)

    def _settle(self, decide: Callable[..., Disposition], *args: Any) -> Disposition:
        try:
            return decide(*args)
        except Exception as error:  # e.g. a dead-letter write that failed: retry, never skip
            log.exception("failure handler raised; the record will be retried")
            self._events.emit("worker.error", where="failure-handler", error=error)
            return INTERNAL_ERROR_RETRY_DELAY
