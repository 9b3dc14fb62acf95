"""RetryThenDeadLetter decides from what it is given: policies, a record writer, events."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Message

from kafka_jobs.deadletter import JOB_FAILED
from kafka_jobs.errors import DeliveryError, NotDecodable
from kafka_jobs.instrumentation.events import Event, EventBus
from kafka_jobs.options import FailurePolicy
from kafka_jobs.processing.failures import Failure, RetryLater, RetryThenDeadLetter
from kafka_jobs.processing.retry import RetryPolicy
from kafka_jobs.wire import H_DLQ_ATTEMPTS, H_DLQ_GROUP, H_DLQ_REASON, Headers, header_map


@dataclass
class Policies:
    policy: FailurePolicy
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    def failure_policy(self, topic: str, task_name: str | None) -> FailurePolicy:
        self.asked.append((topic, task_name))
        return self.policy


@dataclass
class Written:
    timeouts: list[float | None] = field(default_factory=list)
    error: DeliveryError | None = None

    def wait(self, timeout: float | None = None) -> object:
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return self


@dataclass
class Writer:
    fails: bool = False
    records: list[tuple[str, bytes | None, bytes | None, Headers]] = field(default_factory=list)
    handles: list[Written] = field(default_factory=list)

    def enqueue(
        self, topic: str, job_id: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> Written:
        self.records.append((topic, value, key, headers))
        handle = Written(error=DeliveryError("broker said no") if self.fails else None)
        self.handles.append(handle)
        return handle


def _handler(
    retries: int, dead_letter_topic: str | None, writer: Writer
) -> tuple[RetryThenDeadLetter, Policies, list[Event]]:
    policies = Policies(FailurePolicy(RetryPolicy(retries=retries, jitter=0), dead_letter_topic))
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append)
    handler = RetryThenDeadLetter(
        policies, "group-1", writer=writer, events=events, delivery_timeout=7.0
    )
    return handler, policies, seen


def _failure(reason: str = JOB_FAILED, attempt: int = 1) -> Failure:
    record = Message(topic="orders", partition=2, offset=41, key=b"k", value=b"v", headers=[])
    return Failure(record, ValueError("boom"), reason, "tasks.charge", attempt, 1000, 2000)


def test_a_failed_job_with_retries_left_runs_again_later() -> None:
    writer = Writer()
    handler, policies, seen = _handler(retries=2, dead_letter_topic="orders.dlq", writer=writer)
    assert handler.handle(_failure(attempt=1)) == RetryLater(1.0)
    assert policies.asked == [("orders", "tasks.charge")]
    assert writer.records == []
    assert [e.name for e in seen] == ["job.retrying"]


def test_out_of_retries_the_record_is_dead_lettered_and_acknowledged_first() -> None:
    writer = Writer()
    handler, _, seen = _handler(retries=1, dead_letter_topic="orders.dlq", writer=writer)
    assert handler.handle(_failure(attempt=2)) is None
    [(topic, value, key, headers)] = writer.records
    assert (topic, value, key) == ("orders.dlq", b"v", b"k")
    assert (H_DLQ_REASON, JOB_FAILED.encode()) in headers
    assert writer.handles[0].timeouts == [7.0]
    assert [e.name for e in seen] == ["job.dead_lettered"]


def test_a_record_that_cannot_run_is_dead_lettered_at_once() -> None:
    writer = Writer()
    handler, _, _ = _handler(retries=5, dead_letter_topic="orders.dlq", writer=writer)
    assert handler.handle(_failure(reason=NotDecodable.reason)) is None
    [(_, _, _, headers)] = writer.records
    written = header_map(headers)
    assert written[H_DLQ_REASON] == NotDecodable.reason.encode()
    assert written[H_DLQ_ATTEMPTS] == b"0"  # it never ran
    assert written[H_DLQ_GROUP] == b"group-1"


def test_a_failed_dead_letter_write_asks_again_without_running_the_job() -> None:
    writer = Writer(fails=True)
    handler, _, seen = _handler(retries=0, dead_letter_topic="orders.dlq", writer=writer)
    disposition = handler.handle(_failure())
    assert isinstance(disposition, RetryLater) and not disposition.rerun
    assert [e.name for e in seen] == ["dead_letter.failed"]


def test_without_a_dead_letter_topic_the_record_is_dropped() -> None:
    writer = Writer()
    handler, _, _ = _handler(retries=0, dead_letter_topic=None, writer=writer)
    assert handler.handle(_failure()) is None
    assert writer.records == []
