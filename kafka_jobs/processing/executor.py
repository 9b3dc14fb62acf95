"""Runs a job's records on a worker thread: decode, look up, call, report the outcome."""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

from confluent_kafka import Message

from kafka_jobs.canvas.worker import CanvasWorker
from kafka_jobs.context import JobContext, set_current
from kafka_jobs.errors import KafkaJobsError, NotDecodable, RecordRejected, RecordTooLarge
from kafka_jobs.instrumentation import tracing
from kafka_jobs.processing.aio import AsyncRunner, CancelledJob, awaiting
from kafka_jobs.processing.calls import (
    SKIPPED,
    SUSPENDED,
    Call,
    _Skipped,
    _Suspended,
    coordinates,
    fields,
)
from kafka_jobs.processing.control import JobControl, Skip
from kafka_jobs.processing.failures import Disposition, Failure, FailureHandler, RetryLater
from kafka_jobs.processing.jobs import Job
from kafka_jobs.processing.limiting import RateLimits
from kafka_jobs.processing.outcomes import OutcomeKeeper
from kafka_jobs.processing.ports import Processing
from kafka_jobs.processing.processes import ProcessPool
from kafka_jobs.processing.retry import final_error
from kafka_jobs.processing.timelimits import TERMINATED, Abandoned, TimeLimits, failure_reason
from kafka_jobs.processing.watch import GuardedMark, JobWatch
from kafka_jobs.task import Task
from kafka_jobs.wire import H_EXPIRES, Envelope, decode, now_ms, read_task_name

log = logging.getLogger("kafka_jobs.worker")

INTERNAL_ERROR_RETRY_DELAY = 1.0
"""Seconds before a failure handler that raised is asked again."""


class Executor:
    """Runs jobs. Thread-safe: shared by every worker thread, keeps no per-job state.

    Sync jobs run on the calling worker thread, or in a child process with the
    process pool; `async def` jobs run on the event loop (`AsyncRunner`), and
    their job is handed back through `resume` to finish on a worker thread.
    `processing` is what it needs of the app (tasks, settings, events, secret);
    `failures` decides about records that cannot run or whose job raised.
    """

    def __init__(
        self,
        processing: Processing,
        failures: FailureHandler,
        stopping: threading.Event,
        *,
        resume: Callable[[Job], None] | None = None,
        processes: ProcessPool | None = None,
        time_limits: Mapping[str, TimeLimits] | None = None,
    ) -> None:
        self.processing = processing
        self.failures = failures
        self.stopping = stopping
        self.processes = processes
        self._resume = resume
        self._tasks = processing.tasks
        self._settings = processing.settings
        self._secret = processing.secret
        self._events = processing.events
        self._max_bytes = processing.settings.max_payload_bytes
        self._delivery_timeout = processing.settings.delivery_timeout
        self._async: AsyncRunner | None = None
        self._async_lock = threading.Lock()
        self._control = processing.control or JobControl()  # expiry is checked without one
        self.watch = JobWatch(processing, time_limits, resume)
        self._control.on_terminate = self.watch.watchdog.terminate
        self._limits = RateLimits(processing.events, stopping, resume)
        results = processing.results
        self._outcomes = None if results is None else OutcomeKeeper(results, processing)
        self._canvas = (
            None
            if results is None
            else CanvasWorker(processing.tasks, processing.settings, results, processing.secret)
        )

    @property
    def async_runner(self) -> AsyncRunner:
        """The event loop of async jobs, started on first use."""
        if self._async is None:
            with self._async_lock:
                if self._async is None:
                    self._async = AsyncRunner(self._settings.async_concurrency)
        return self._async

    def close(self) -> None:
        """Stop the event loop, the child processes and the canvas's reader, if started."""
        self.watch.watchdog.close()
        if self._async is not None:
            self._async.stop()
        if self.processes is not None:
            self.processes.close()
        if self._canvas is not None:
            self._canvas.close()

    # The per-record hot path stays in one function: a call per step costs throughput.
    def run(self, job: Job) -> bool:  # noqa: C901
        """Run the job's records in order; stop early if the partition is lost or the worker stops.

        Records not run stay out of `job.done_offsets`, so their offsets are never
        committed; a record to be retried sets `job.resume_from` and `job.retry_at`.
        Returns False when the job waits for an async record: `resume` hands it back
        to a worker thread, which calls `run` again to go on from there.
        """
        if job.hook is not None:
            self._run_hook(job)
            return True
        state = job.state
        done = job.done_offsets
        collapsed = job.batch.collapsed if job.batch is not None else None
        records = job.records
        while job.processed < len(records):
            record = records[job.processed]
            offset = cast(int, record.offset())
            call = job.pending
            if call is not None:  # an async record ended: judge its outcome
                job.pending = None
                generation = call.generation
                concluded = self._conclude(job, record, call)
                if concluded is SKIPPED:
                    break
                disposition = cast(Disposition, concluded)
            else:
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
                    outcome = self.run_record(job, record)
                    if outcome is SUSPENDED:
                        return False
                    if outcome is SKIPPED:
                        break
                    disposition = cast(Disposition, outcome)
            if state.generation != generation:
                break  # revoked while it ran: it may have given up; never count it done
            if disposition is not None and not disposition.settled:  # Requeued: moves on
                if job.batch is None:  # lanes collapse instead: the listener re-runs the rest
                    job.resume_from = offset
                    job.retry_at = time.monotonic() + disposition.delay
                break
            job.processed += 1
            if not job.manual:
                held = job.held
                if not held:
                    done.append(offset)
                    continue
                if held[-1][0] != offset:  # after a held one: held back too, in order
                    held.append((offset, None))
                if not job.release_held(wait=False, timeout=self._delivery_timeout):
                    break
        if job.held:
            job.release_held(wait=True, timeout=self._delivery_timeout)
        return True

    def run_record(self, job: Job, record: Message) -> Disposition | _Suspended | _Skipped:  # noqa: C901
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
        control = self._control  # most jobs: no revocation known, no expiry header
        if control.revoked or H_EXPIRES in envelope.headers:
            skip = control.verdict(envelope, now_ms())
            if skip is not None:
                return self._skip(job, record, envelope, task.keeps_result, *skip)
        offset: int = record.offset()  # type: ignore[assignment]  # a fetched record has one
        rate = task.options.rate_limit
        if rate is not None:  # over its limit: the job waits for the token, off this thread
            held = self._limits.hold(job, offset, task.name, envelope.job_id, rate)
            if held is not None:
                return held
        state = job.state
        runs, first_failed_ms = state.failures.get(offset, (0, 0)) if state.failures else (0, 0)
        guard = GuardedMark(job) if job.manual else None
        context = JobContext(
            envelope.task,
            envelope.job_id,
            state.topic,
            state.partition,
            offset,
            envelope.attempt + runs,
            envelope.key,
            envelope.headers,
            state.revoked_event,
            self.stopping,
            guard or job.mark_through,
            self._settings,
            job.group_metadata,
            state,
        )
        call = Call(envelope, context, runs, first_failed_ms)
        call.generation = state.generation  # before any wait: see `_submit`
        outcomes = self._outcomes
        call.keep = outcomes is not None and task.keeps_result
        if call.keep:
            assert outcomes is not None
            call.started_ms = outcomes.started(envelope, context.attempt)
        if self._events.active:
            self._events.emit("job.started", **coordinates(context), attempt=context.attempt)
        if tracing.enabled():
            call.span = tracing.JobSpan(
                envelope.task,
                envelope.headers,
                {
                    "messaging.destination.name": job.topic,
                    "messaging.destination.partition.id": str(job.partition),
                    "messaging.kafka.offset": offset,
                    "messaging.message.id": envelope.job_id,
                    "kafka_jobs.attempt": context.attempt,
                },
            )
        if task.is_async:
            try:  # calling it only builds the coroutine; bad arguments raise here
                coroutine = task.fn(*envelope.args, **envelope.kwargs)
            except BaseException as error:
                call.error = error
                return self._conclude(job, record, call)
            return self._submit(job, cast(Coroutine[Any, Any, object], coroutine), call, task)
        pooled = self.processes is not None and not task.bookkeeping
        running = self.watch.begin(job, call, task, "process" if pooled else "thread")
        if guard is not None:  # an ended run's later marks must not count
            guard.running = running
        watchdog = self.watch.watchdog
        set_current(context)
        token = call.span.activate() if call.span is not None else None
        result: object = None
        try:
            watchdog.start(running)  # limits, terminate=True; a soft limit may come from here on
            if pooled:
                assert self.processes is not None
                result = self.processes.call(
                    task.name, envelope.args, envelope.kwargs, fields(context), running
                )
            else:
                result = task.fn(*envelope.args, **envelope.kwargs)
            ended = watchdog.finish(running)  # in the try: a soft limit raised here is the job's
        except BaseException as error:  # SystemExit from a job is a failure too, not a dead thread
            call.error = error
            ended = watchdog.finish(running)
        finally:
            set_current(None)
            if token is not None:
                tracing.JobSpan.deactivate(token)
        if ended is not None:  # a hard limit or terminate=True ended it
            if running.abandoned:
                raise Abandoned  # a new thread concluded the record: this one only ends
            call.error = ended
        # `result is not None` first: most jobs return None, and isawaitable costs ~0.5 us.
        if call.error is None and result is not None and inspect.isawaitable(result):
            # An async function not seen as one (behind a sync decorator, an async
            # __call__): its work is in what it returned.
            return self._submit(job, awaiting(result), call, task)
        call.value = result
        return self._conclude(job, record, call)

    def _submit(
        self, job: Job, coroutine: Coroutine[Any, Any, object], call: Call, task: Task[..., object]
    ) -> _Suspended | _Skipped:
        """Hand an async record's coroutine to the event loop; its job resumes when it ends."""
        resume = self._resume
        if resume is None:
            coroutine.close()
            raise KafkaJobsError("async jobs need an executor built with resume=")
        runner = self.async_runner
        runner.acquire()  # may wait for a slot: look again at what happened meanwhile
        if self.stopping.is_set() or job.state.generation != call.generation:
            runner.release()
            coroutine.close()
            if call.span is not None:
                call.span.end(None)
            self._events.emit(
                "job.skipped", topic=job.topic, partition=job.partition, offset=call.context.offset
            )
            return SKIPPED
        job.pending = call  # before the loop can end it and hand the job back
        running = self.watch.begin(job, call, task, "async")
        watchdog = self.watch.watchdog

        def ended(future: concurrent.futures.Future[object]) -> None:
            if watchdog.finish(running) is not None:
                return  # ended by a limit or terminate=True: the job went on already
            call.error = future.exception() if not future.cancelled() else CancelledJob()
            if call.error is None:
                call.value = future.result()
            resume(job)

        running.handle = runner.start(coroutine, call.context, ended, call.span)
        watchdog.start(running)
        return SUSPENDED

    def _conclude(self, job: Job, record: Message, call: Call) -> Disposition | _Skipped:
        """Success or failure handling of a record that ran (here, in a child or on the loop)."""
        context = call.context
        error = call.error
        if isinstance(error, CancelledJob) and self.stopping.is_set():
            # Cancelled by the shutdown, not failed: it stays uncommitted and runs again.
            if call.span is not None:
                call.span.end(error)
            return SKIPPED
        if error is None and context.children:
            try:
                self._await_children(context)
            except BaseException as child_error:
                error = child_error
        if error is None and call.keep:
            assert self._outcomes is not None
            # Regular batches do not wait here for the write: the offset is held back
            # from the commit until it is acknowledged (`_release_held`), so the
            # waits of a partition's records overlap instead of adding up.
            defer = job.batch is None and not job.manual
            error, delivery = self._outcomes.succeeded(
                call.envelope, call.value, context.attempt, call.started_ms, wait=not defer
            )
            if delivery is not None:
                job.held.append((context.offset, delivery))
            if error is None and self._canvas is not None:  # the next step, a chord's join
                at = None if job.manual else context  # manual offsets: never committed for the job
                error = self._canvas.succeeded(call.envelope, call.value, at, delivery)
        if call.span is not None:
            call.span.end(error)
        if error is not None:
            return self._failed(job, record, call, error)
        offset = context.offset
        failures = job.state.failures
        job.durations.append(time.perf_counter() - call.started)
        if failures:
            failures.pop(offset, None)
        if self._events.active:
            self._events.emit(
                "job.succeeded",
                **coordinates(context),
                duration=time.perf_counter() - call.started,
            )
        return None

    def _failed(self, job: Job, record: Message, call: Call, error: BaseException) -> Disposition:
        """A run that raised: retry, dead-letter or drop, per the failure policy."""
        context = call.context
        envelope = call.envelope
        offset = context.offset
        failures = job.state.failures
        self._events.emit(
            "job.failed",
            **coordinates(context),
            error=error,
            attempt=context.attempt,
            duration=time.perf_counter() - call.started,
        )
        reason = failure_reason(error)
        if reason == TERMINATED:  # revoked while it ran: settled, never retried
            failures.pop(offset, None)
            return self._skip(job, record, envelope, call.keep, "revoked", error)  # type: ignore[arg-type]
        now = now_ms()
        if job.batch is not None:
            # A lane failed: collapse. This run counts as an attempt; the sequential
            # re-run that follows applies retries and dead letters per record.
            failures[offset] = (call.runs + 1, call.first_failed_ms or now)
            job.batch.collapsed.set()
            return RetryLater(0.0)
        failure = Failure(
            record,
            error,
            reason,
            envelope.task,
            context.attempt,
            call.first_failed_ms or now,
            now,
        )
        disposition = self._settle(failure, job)
        if call.keep:
            assert self._outcomes is not None
            self._outcomes.failed(
                call.envelope, failure, disposition, call.context.attempt, call.started_ms
            )
            if disposition is None and self._canvas is not None:  # failed for good
                self._canvas.failed(call.envelope, final_error(error, context.attempt))
        if disposition is None or disposition.settled:
            failures.pop(offset, None)
        elif disposition.rerun:
            failures[offset] = (call.runs + 1, failure.first_failed_ms)
        return disposition

    def _skip(
        self,
        job: Job,
        record: Message,
        envelope: Envelope,
        keeps: bool,
        why: Skip,
        error: KafkaJobsError,
    ) -> Disposition:
        """Settle a job that must not start or was terminated; expired ones may be dead-lettered."""
        self._events.emit(
            f"job.{why}",
            topic=job.topic,
            partition=job.partition,
            offset=record.offset(),
            job_id=envelope.job_id,
            task=envelope.task,
            error=error,
        )
        log.info("not started (%s): %s", why, error)
        if self._outcomes is not None and keeps:
            self._outcomes.skipped(envelope, why, error)
            if self._canvas is not None:  # a chain stops, a chord hears of it
                self._canvas.failed(envelope, error)
        if why == "expired" and self._settings.dead_letter_expired:
            now = now_ms()
            return self._settle(
                Failure(record, error, why, envelope.task, envelope.attempt, now, now), job
            )
        return None

    def _decode(self, record: Message) -> tuple[Envelope, Task[..., object]]:
        try:
            value = record.value()
            if value is not None and len(value) > self._max_bytes:
                raise RecordTooLarge(f"value is {len(value)} bytes; the limit is {self._max_bytes}")
            envelope = decode(value, record.headers(), record.key(), self._secret)
            # A chord's join, or a copy of a canvas step that ran, runs canvas bookkeeping.
            special = None if self._canvas is None else self._canvas.task_for(envelope)
            return envelope, special or self._tasks.task(envelope.task)
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
        for child in context.children:
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
