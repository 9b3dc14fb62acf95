"""Runs a job's records on a worker thread: decode, look up, call, report the outcome."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol, cast

from confluent_kafka import Message

from kafka_jobs.app import App
from kafka_jobs.context import JobContext, _set_current
from kafka_jobs.errors import NotDecodable, RecordRejected, RecordTooLarge
from kafka_jobs.wire import Envelope, decode
from kafka_jobs.worker.jobs import Job

log = logging.getLogger("kafka_jobs.worker")


class FailureHandler(Protocol):
    """Decides what happens to a record that cannot run or whose job raised.

    Called on the worker thread that ran the record. When it returns, the
    record counts as done and its offset may be committed; to hold the offset
    back (e.g. until a dead-letter write is acknowledged) it must not return
    before that is settled.
    """

    def rejected(self, record: Message, error: RecordRejected) -> None:
        """The record is not a runnable job (undecodable, unknown task, too large...)."""

    def failed(self, record: Message, envelope: Envelope, error: BaseException) -> None:
        """The job ran and raised."""


class LogFailures:
    """Logs the failure with its record's coordinates and moves on."""

    def rejected(self, record: Message, error: RecordRejected) -> None:
        """Log a record that cannot run."""
        log.error(
            "rejected record topic=%s partition=%s offset=%s reason=%s: %s",
            record.topic(),
            record.partition(),
            record.offset(),
            error.reason,
            error,
        )

    def failed(self, record: Message, envelope: Envelope, error: BaseException) -> None:
        """Log a job that raised."""
        log.error(
            "job failed topic=%s partition=%s offset=%s job_id=%s task=%s: %r",
            record.topic(),
            record.partition(),
            record.offset(),
            envelope.job_id,
            envelope.task,
            error,
            exc_info=error,
        )


class Executor:
    """Runs jobs. Thread-safe: shared by every worker thread, keeps no per-job state."""

    def __init__(self, app: App, failures: FailureHandler, stopping: threading.Event) -> None:
        self.app = app
        self.failures = failures
        self.stopping = stopping
        self._events = app.events
        self._max_bytes = app.settings.max_payload_bytes

    def run(self, job: Job) -> None:
        """Run the job's records in order; stop early if the partition is lost or the worker stops.

        Records not run stay out of `job.done_offsets`, so their offsets are never committed.
        """
        state = job.state
        done = job.done_offsets
        for record in job.records:
            if state.revoked or self.stopping.is_set():
                self._events.emit(
                    "job.skipped", topic=job.topic, partition=job.partition, offset=record.offset()
                )
                break
            self.run_record(job, record)
            done.append(cast(int, record.offset()))

    def _reject(self, job: Job, record: Message, error: RecordRejected) -> None:
        self._events.emit(
            "record.rejected",
            topic=job.topic,
            partition=job.partition,
            offset=record.offset(),
            error=error,
        )
        self.failures.rejected(record, error)

    def run_record(self, job: Job, record: Message) -> None:
        """Run one record; every failure is handed to the failure handler, never raised."""
        try:
            value = record.value()
            if value is not None and len(value) > self._max_bytes:
                raise RecordTooLarge(f"value is {len(value)} bytes; the limit is {self._max_bytes}")
            envelope = decode(value, record.headers(), record.key())
            task = self.app.task(envelope.task)
        except RecordRejected as error:
            self._reject(job, record, error)
            return
        except Exception as error:  # a decoder bug must not stall the partition
            self._reject(job, record, NotDecodable(f"decoding failed: {error!r}"))
            return
        _set_current(
            JobContext(
                envelope.task,
                envelope.job_id,
                job.topic,
                job.partition,
                cast(int, record.offset()),
                envelope.attempt,
                envelope.key,
                envelope.headers,
                job.state._revoked,
                self.stopping,
            )
        )
        started = time.perf_counter()
        try:
            task.fn(*envelope.args, **envelope.kwargs)
        except Exception as error:
            self._events.emit(
                "job.failed",
                topic=job.topic,
                partition=job.partition,
                offset=record.offset(),
                job_id=envelope.job_id,
                task=envelope.task,
                error=error,
                duration=time.perf_counter() - started,
            )
            self.failures.failed(record, envelope, error)
        else:
            if self._events.active:
                self._events.emit(
                    "job.succeeded",
                    topic=job.topic,
                    partition=job.partition,
                    offset=record.offset(),
                    job_id=envelope.job_id,
                    task=envelope.task,
                    duration=time.perf_counter() - started,
                )
        finally:
            _set_current(None)
