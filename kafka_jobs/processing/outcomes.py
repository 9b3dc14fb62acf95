"""What the executor writes to the results topic for jobs that keep their result.

A job's run writes "started" (not waited for) and then one final or "retrying"
outcome (also for a job re-enqueued for its retry), which is waited for before
its offset may be committed. A value that cannot be written fails the job with
`ResultNotSerializable` as its reason.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, cast

from kafka_jobs.processing.failures import Disposition, Failure
from kafka_jobs.processing.processes import UNSENDABLE
from kafka_jobs.processing.retry import final_error
from kafka_jobs.results.outcome import Outcome, RemoteError, State
from kafka_jobs.results.writer import ResultNotSerializable, ResultWriter
from kafka_jobs.wire import JSON, Envelope, now_ms

if TYPE_CHECKING:
    from kafka_jobs.processing.ports import Delivery, Processing

log = logging.getLogger(__name__)


class OutcomeKeeper:
    """Writes outcomes through the worker's `ResultWriter`. Thread-safe."""

    def __init__(self, results: ResultWriter, processing: Processing) -> None:
        self._results = results
        self._tasks = processing.tasks
        self._secret = processing.secret
        self._policies = processing.policies

    def started(self, envelope: Envelope, attempt: int) -> int:
        """Record that the job started; returns the start time (ms)."""
        started_ms = now_ms()
        outcome = Outcome(
            envelope.job_id, envelope.task, "started", attempts=attempt, started_at_ms=started_ms
        )
        try:
            self._results.write(outcome, wait=False)
        except Exception as error:  # the final outcome still tells; the job runs
            log.warning("started state of job %s not written: %s", envelope.job_id, error)
        return started_ms

    def succeeded(
        self, envelope: Envelope, value: object, attempt: int, started_ms: int, *, wait: bool
    ) -> tuple[BaseException | None, Delivery | None]:
        """Write the value; the error that makes the job fail instead, if any.

        Not waiting, the write's acknowledgement comes back too: the offset must not
        be committed before it.
        """
        writes: list[Delivery] = []
        error = self._write(envelope, "succeeded", value, None, attempt, started_ms, wait, writes)
        return error, (writes[0] if writes else None)

    def skipped(self, envelope: Envelope, state: State, error: BaseException) -> None:
        """Write the outcome of a job that did not start (expired, revoked)."""
        problem = self._write(envelope, state, None, error, envelope.attempt, 0)
        if problem is not None:
            log.error("outcome of job %s (%s) not written: %s", envelope.job_id, state, problem)

    def failed(
        self,
        envelope: Envelope,
        failure: Failure,
        disposition: Disposition,
        attempt: int,
        started_ms: int,
    ) -> None:
        """Write a failed run's outcome: retrying, or final (dead-lettered or failed)."""
        if disposition is not None and not disposition.rerun:
            return  # the dead letter is still being written: its outcome comes then
        if disposition is not None:
            state: State = "retrying"
        else:
            policies = self._policies
            dead = policies is not None and (
                policies.failure_policy(failure.topic, failure.task).dead_letter_topic is not None
            )
            state = "dead-lettered" if dead else "failed"
        error = failure.error if disposition is not None else final_error(failure.error, attempt)
        problem = self._write(envelope, state, None, error, attempt, started_ms)
        if problem is not None:
            log.error("outcome of job %s (%s) not written: %s", envelope.job_id, state, problem)

    def _write(
        self,
        envelope: Envelope,
        state: State,
        value: object,
        error: BaseException | None,
        attempt: int,
        started_ms: int,
        wait: bool = True,
        writes: list[Delivery] | None = None,
    ) -> BaseException | None:
        task = envelope.task
        if value is UNSENDABLE:
            return ResultNotSerializable(
                f"the value returned by {task} could not be sent back from the worker process"
            )
        try:
            if error is None and self._tasks.task(task).options.serializer == "dill":
                outcome = Outcome.pickling(self._secret, envelope.job_id, task, value)
            else:
                outcome = Outcome(envelope.job_id, task, state, cast(JSON, value))
        except TypeError as exc:
            return ResultNotSerializable(f"the value returned by {task}: {exc}")
        outcome = dataclasses.replace(
            outcome,
            error=None if error is None else RemoteError.of(error),
            attempts=attempt,
            started_at_ms=started_ms,
            finished_at_ms=now_ms(),
        )
        try:
            delivery = self._results.write(outcome, wait=wait)
        except Exception as write_error:  # not JSON, or not written: the job fails
            return write_error
        if writes is not None and not wait:
            writes.append(delivery)
        return None
