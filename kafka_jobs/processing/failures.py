"""What happens to a record that cannot run or whose job raised: retry, dead-letter, or log."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from confluent_kafka import Message

from kafka_jobs import deadletter
from kafka_jobs.errors import DeliveryError, EnqueueError
from kafka_jobs.processing.requeue import requeue
from kafka_jobs.processing.retry import RetryOrdering, decide, final_error
from kafka_jobs.wire import read_first_failed_ms, read_job_id

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.instrumentation.events import EventBus
    from kafka_jobs.options import FailurePolicy
    from kafka_jobs.processing.ports import FailurePolicies, RecordWriter

log = logging.getLogger("kafka_jobs.worker")


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Run the record again after `delay` seconds; only its partition waits.

    rerun: True runs the job again (a retry); False only asks the failure handler
    again (e.g. the dead-letter write failed: the job itself must not run twice).
    """

    delay: float
    rerun: bool = True
    settled: ClassVar[bool] = False
    """The record's offset must not move on yet."""


@dataclass(frozen=True, slots=True)
class Requeued:
    """The job was re-enqueued (acknowledged) to run again in `delay` seconds: its offset moves on.

    Its outcome is "retrying"; the copy carries the next attempt number.
    """

    delay: float
    rerun: ClassVar[bool] = True
    settled: ClassVar[bool] = True


Disposition = RetryLater | Requeued | None
"""None (or `Requeued`) settles the record: its offset may be committed."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that could not run (`reason` names why) or whose job raised (`job-failed`)."""

    record: Message
    error: BaseException
    reason: str
    task: str | None
    attempt: int
    first_failed_ms: int
    last_failed_ms: int

    @property
    def topic(self) -> str:
        """The record's topic."""
        return str(self.record.topic())

    @property
    def partition(self) -> int:
        """The record's partition."""
        return int(self.record.partition() or 0)

    @property
    def offset(self) -> int:
        """The record's offset."""
        return int(self.record.offset() or 0)

    @property
    def job_id(self) -> str | None:
        """The job id from the record's headers (None when it has none)."""
        return read_job_id(self.record.headers())

    def fields(self) -> dict[str, object]:
        """The record's coordinates: log fields (`extra=`) and event payload keys."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "job_id": self.job_id,
            "task": self.task,
            "attempt": self.attempt,
        }

    def describe(self) -> str:
        """Coordinates and cause, for log lines."""
        return (
            f"topic={self.topic} partition={self.partition} offset={self.offset}"
            f" job_id={self.job_id or '?'} task={self.task or '?'} attempt={self.attempt}"
            f" reason={self.reason}: {self.error!r}"
        )


class FailureHandler(Protocol):
    """Decides what happens to a failure; called on the worker thread that met it.

    Returning None settles the record; to hold its offset back until something is
    done (a dead-letter write acknowledged) return only once it is, or `RetryLater`.
    Must not raise; if it does, the worker logs it and asks again later.
    """

    def handle(self, failure: Failure) -> Disposition:
        """Retry, park or drop the failed record."""


class LogFailures:
    """Logs every failure and settles the record: no retries, no dead letters."""

    def handle(self, failure: Failure) -> Disposition:
        """Log and move on."""
        log.error(
            "giving up on record %s",
            failure.describe(),
            exc_info=failure.error,
            extra=failure.fields(),
        )
        return None


class RetryThenDeadLetter:
    """The default: retry per the job's policy, then write the record to its dead-letter topic.

    Records that cannot run go to the dead-letter topic at once. The offset moves on
    only after the broker acknowledged the dead letter; a failed write is retried
    with backoff (the job is not run again). Topics whose dead-letter topic is
    disabled log and move on.

    A retry waiting longer than `retry_pause_max` seconds (unless the record's
    retry ordering is "strict") is re-enqueued through the delay tiers instead of
    pausing the partition; the offset moves on once the copy is acknowledged, and
    a failed write is retried like a dead letter's.

    policies: each record's retry policy and dead-letter topic.
    group_id: the consumer group named in the dead letters' headers.
    writer: writes the dead letters (the app's producer).
    events: where `job.retrying`, `job.dead_lettered` and `dead_letter.failed` go.
    delivery_timeout: seconds to wait for a dead letter's acknowledgement.
    retry_pause_max / retry_ordering / delay_prefix: the worker's settings of the
        same names (`retry_ordering` is the default of records whose policy sets none).

    Thread-safe: worker threads share one; it keeps no state of its own.
    """

    def __init__(
        self,
        policies: FailurePolicies,
        group_id: str,
        *,
        writer: RecordWriter,
        events: EventBus,
        delivery_timeout: float,
        retry_pause_max: float = 1.0,
        retry_ordering: RetryOrdering = "relaxed",
        delay_prefix: str = "kafka-jobs.delay",
    ) -> None:
        self.policies = policies
        self.group_id = group_id
        self.writer = writer
        self.events = events
        self.delivery_timeout = delivery_timeout
        self.retry_pause_max = retry_pause_max
        self.retry_ordering = retry_ordering
        self.delay_prefix = delay_prefix
        self.dead_letters = deadletter.Writer(group_id)

    @classmethod
    def for_app(cls, app: App, group_id: str) -> RetryThenDeadLetter:
        """The policy with `app`'s failure policies, producer, event bus and delivery timeout."""
        return cls(
            app,
            group_id,
            writer=app.producer,
            events=app.events,
            delivery_timeout=app.settings.delivery_timeout,
            retry_pause_max=app.settings.retry_pause_max,
            retry_ordering="strict" if app.settings.retry_ordering == "strict" else "relaxed",
            delay_prefix=app.settings.delay_topic_prefix,
        )

    def handle(self, failure: Failure) -> Disposition:
        """Retry, dead-letter, or (dead letters disabled) log and drop."""
        policy = self.policies.failure_policy(failure.topic, failure.task)
        events = self.events
        if failure.reason in deadletter.RAN:
            carried = read_first_failed_ms(failure.record.headers())
            if carried is not None and carried < failure.first_failed_ms:  # an earlier copy's
                failure = dataclasses.replace(failure, first_failed_ms=carried)
            decision = decide(
                policy.retry,
                failure.error,
                failure.attempt,
                ordering=policy.ordering or self.retry_ordering,
                pause_max=self.retry_pause_max,
            )
            if decision is not None:
                return self._retry(failure, decision.delay, decision.requeue, policy)
            failure = dataclasses.replace(
                failure, error=final_error(failure.error, failure.attempt)
            )
        if policy.dead_letter_topic is None:
            log.error(
                "giving up (no dead-letter topic): %s", failure.describe(), extra=failure.fields()
            )
            return None
        try:
            self._write(failure, policy.dead_letter_topic)
        except (DeliveryError, EnqueueError) as error:
            delay = policy.retry.delay(max(1, failure.attempt))
            log.error(
                "dead-letter write to %s failed, retrying in %.2fs; the record stays"
                " unconsumed: %s (%s)",
                policy.dead_letter_topic,
                delay,
                failure.describe(),
                error,
                extra=failure.fields(),
            )
            events.emit("dead_letter.failed", **_coordinates(failure), write_error=error)
            return RetryLater(max(delay, 0.5), rerun=False)
        log.warning(
            "dead-lettered to %s: %s",
            policy.dead_letter_topic,
            failure.describe(),
            extra=failure.fields(),
        )
        events.emit(
            "job.dead_lettered", **_coordinates(failure), dead_letter_topic=policy.dead_letter_topic
        )
        return None

    def _retry(
        self, failure: Failure, delay: float, requeue_it: bool, policy: FailurePolicy
    ) -> Disposition:
        if not requeue_it:
            log.warning("retrying in %.2fs: %s", delay, failure.describe(), extra=failure.fields())
            self.events.emit("job.retrying", **_coordinates(failure), delay=delay, how="paused")
            return RetryLater(delay)
        try:
            topic = requeue(
                self.writer,
                failure.record,
                attempt=failure.attempt,
                first_failed_ms=failure.first_failed_ms,
                delay=delay,
                delay_prefix=self.delay_prefix,
                timeout=self.delivery_timeout,
            )
        except (DeliveryError, EnqueueError) as error:
            wait = max(0.5, min(delay, policy.retry.delay(max(1, failure.attempt))))
            log.error(
                "re-enqueueing the retry failed, trying again in %.2fs; the record stays"
                " unconsumed: %s (%s)",
                wait,
                failure.describe(),
                error,
                extra=failure.fields(),
            )
            self.events.emit("retry.requeue_failed", **_coordinates(failure), write_error=error)
            return RetryLater(wait, rerun=False)
        log.warning(
            "retrying in %.2fs, re-enqueued to %s: %s",
            delay,
            topic,
            failure.describe(),
            extra=failure.fields(),
        )
        self.events.emit("job.retrying", **_coordinates(failure), delay=delay, how="requeued")
        return Requeued(delay)

    def _write(self, failure: Failure, topic: str) -> None:
        record = failure.record
        failed = deadletter.FailedRecord(
            topic=failure.topic,
            partition=failure.partition,
            offset=failure.offset,
            key=record.key(),
            value=record.value(),
            headers=record.headers(),
            reason=failure.reason,
            error=failure.error,
            attempts=failure.attempt if failure.reason in deadletter.RAN else 0,
            first_failed_ms=failure.first_failed_ms,
            last_failed_ms=failure.last_failed_ms,
        )
        self.dead_letters.write(self.writer, topic, failed, timeout=self.delivery_timeout)


def _coordinates(failure: Failure) -> dict[str, object]:
    return {**failure.fields(), "error": failure.error, "reason": failure.reason}
