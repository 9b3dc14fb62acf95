"""Runs a job's records on a worker thread: decode, look up, call, report the outcome."""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

from confluent_kafka import Message

from kafka_jobs.app import App
from kafka_jobs.context import JobContext, _set_current
from kafka_jobs.deadletter import JOB_FAILED
from kafka_jobs.errors import NotDecodable, RecordRejected, RecordTooLarge
from kafka_jobs.task import Task
from kafka_jobs.wire import Envelope, decode, now_ms, read_task_name
from kafka_jobs.worker.failures import Disposition, Failure, FailureHandler, RetryLater
from kafka_jobs.worker.jobs import Job

log = logging.getLogger("kafka_jobs.worker")

INTERNAL_ERROR_RETRY_DELAY = 1.0
"""Seconds before a failure handler that raised is asked again."""


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
        if job.hook is not None:
            self._run_hook(job)
            return
        state = job.state
        done = job.done_offsets
        collapsed = job.batch.collapsed if job.batch is not None else None
        for record in job.records:
            offset = cast(int, record.offset())
            if state.revoked or self.stopping.is_set() or (collapsed and collapsed.is_set()):
                self._events.emit(
                    "job.skipped", topic=job.topic, partition=job.partition, offset=offset
                )
                break
            generation = state.generation
            unsettled = state.unsettled.pop(offset, None)
            if unsettled is not None:  # the job ran; only its failure handling is retried
                disposition = self._settle(unsettled, job)
            else:
                disposition = self.run_record(job, record)
            if state.generation != generation:
                break  # revoked while it ran: it may have given up; never count it done
            if disposition is not None:
                if job.batch is None:  # lanes collapse instead: the listener re-runs the rest
                    job.resume_from = offset
                    job.retry_at = time.monotonic() + disposition.delay
                break
            job.processed += 1
            if not job.manual:
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
            now = now_ms()
            return self._settle(
                Failure(record, error, error.reason, read_task_name(record.headers()), 1, now, now),
                job,
            )
        offset = cast(int, record.offset())
        failures = job.state.failures
        runs, first_failed_ms = failures.get(offset, (0, 0))
        attempt = envelope.attempt + runs
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
            job.mark_through,
            self.app,
            job.group_metadata,
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
            now = now_ms()
            if job.batch is not None:
                # A lane failed: collapse. This run counts as an attempt; the sequential
                # re-run that follows applies retries and dead letters per record.
                failures[offset] = (runs + 1, first_failed_ms or now)
                job.batch.collapsed.set()
                return RetryLater(0.0)
            failure = Failure(
                record, error, JOB_FAILED, envelope.task, attempt, first_failed_ms or now, now
            )
            disposition = self._settle(failure, job)
            if disposition is not None and disposition.rerun:
                failures[offset] = (runs + 1, failure.first_failed_ms)
            elif disposition is None:
                failures.pop(offset, None)
            return disposition
        else:
            job.durations.append(time.perf_counter() - started)
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
            envelope = decode(value, record.headers(), record.key(), self.app.secret)
            return envelope, self.app.task(envelope.task)
        except RecordRejected:
            raise
        except Exception as error:  # a decoder bug must not stall the partition
            raise NotDecodable(f"decoding failed: {error!r}") from error

    def _run_hook(self, job: Job) -> None:
        assert job.hook is not None
        try:
            job.hook()
        except Exception as error:  # a user hook failing must not take the thread down
            log.exception("%s hook for %s[%d] failed", job.kind, job.topic, job.partition)
            self._events.emit(
                "hook.failed", kind=job.kind, topic=job.topic, partition=job.partition, error=error
            )

    def _await_children(self, context: JobContext) -> None:
        """Jobs enqueued by this job must be acknowledged before its offset may be committed."""
        for child in context._children:
            child.wait(self._delivery_timeout)

    def _settle(self, failure: Failure, job: Job) -> Disposition:
        """Ask the failure handler; remember failures whose handling must be retried."""
        try:
            disposition = self.failures.handle(failure)
        except Exception as error:  # e.g. an unexpected bug in a custom handler: ask again later
            log.exception("failure handler raised; it will be asked again: %s", failure.describe())
            self._events.emit("worker.error", where="failure-handler", error=error)
            disposition = RetryLater(INTERNAL_ERROR_RETRY_DELAY, rerun=False)
        if disposition is not None and not disposition.rerun:
            job.state.unsettled[failure.offset] = failure
        return disposition
