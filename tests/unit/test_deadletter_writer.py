"""deadletter.Writer: the one writer of dead letters (the worker's and the Celery bridge's)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from confluent_kafka import KafkaError, Message

from kafka_jobs import deadletter, wire
from kafka_jobs.errors import DeliveryError, EnqueueError
from kafka_jobs.wire import Headers, header_map

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


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
class FakeProducer:
    """Both ports of `JobProducer`: `enqueue` (waited on) and `produce` (a callback)."""

    fails: bool = False
    refuses: bool = False
    enqueued: list[tuple[str, str, bytes | None, bytes | None, Headers]] = field(
        default_factory=list
    )
    produced: list[tuple[str, bytes | None, bytes | None, Headers]] = field(default_factory=list)
    handles: list[Written] = field(default_factory=list)
    callbacks: list[deadletter.OnDelivery] = field(default_factory=list)

    def enqueue(
        self, topic: str, job_id: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> Written:
        if self.refuses:
            raise EnqueueError("queue full")
        self.enqueued.append((topic, job_id, value, key, headers))
        handle = Written(error=DeliveryError("broker said no") if self.fails else None)
        self.handles.append(handle)
        return handle

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: deadletter.OnDelivery | None = None,
    ) -> None:
        if self.refuses:
            raise EnqueueError("queue full")
        self.produced.append((topic, value, key, headers))
        assert on_delivery is not None
        self.callbacks.append(on_delivery)

    def report(self) -> None:
        """Serve the delivery reports, as `poll` would."""
        error = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fails else None
        reports = zip(self.produced, self.callbacks, strict=True)
        for (topic, value, key, headers), callback in reports:
            callback(error, Message(topic=topic, value=value, key=key, headers=headers))


FAILED = deadletter.FailedRecord(
    topic="orders",
    partition=2,
    offset=41,
    key=b"k",
    value=b"v",
    headers=[
        ("traceparent", TRACEPARENT),
        ("user", b"kept"),
        (wire.H_DLQ_REASON, b"from-an-older-dead-letter"),
    ],
    reason=deadletter.JOB_FAILED,
    error=ValueError("boom"),
    attempts=3,
    first_failed_ms=1000,
    last_failed_ms=2000,
)


def _text(headers: Headers) -> dict[str, str]:
    return {name: (value or b"").decode() for name, value in header_map(headers).items()}


def test_the_headers_keep_the_original_ones_and_explain_the_failure() -> None:
    headers = deadletter.Writer("group-1").headers(FAILED)
    names = [name for name, _ in headers]
    assert names[:2] == ["traceparent", "user"]  # original first, older dead-letter ones dropped
    assert names.count(wire.H_DLQ_REASON) == 1
    text = _text(headers)
    assert text[wire.H_DLQ_REASON] == deadletter.JOB_FAILED
    assert text[wire.H_DLQ_EXCEPTION] == "builtins.ValueError"
    assert text[wire.H_DLQ_MESSAGE] == "boom"
    assert "ValueError: boom" in text[wire.H_DLQ_TRACEBACK]
    assert (text[wire.H_DLQ_TOPIC], text[wire.H_DLQ_PARTITION], text[wire.H_DLQ_OFFSET]) == (
        "orders",
        "2",
        "41",
    )
    assert text[wire.H_DLQ_GROUP] == "group-1"
    assert text[wire.H_DLQ_ATTEMPTS] == "3"
    assert (text[wire.H_DLQ_FIRST_FAILED], text[wire.H_DLQ_LAST_FAILED]) == ("1000", "2000")
    assert text[wire.H_DLQ_HOST].rpartition(":")[2].isdigit()
    assert text[wire.H_DLQ_TRACE_ID] == "0af7651916cd43dd8448eb211c80319c"
    assert wire.H_TASK not in text


def test_mapping_headers_are_kept_too() -> None:
    headers = deadletter.Writer("g").headers(replace(FAILED, headers={"user": b"kept"}))
    assert headers[0] == ("user", b"kept")
    assert wire.H_DLQ_TRACE_ID not in _text(headers)


def test_extra_headers_come_last() -> None:
    extra = [(wire.H_TASK, b"proj.tasks.add")]
    headers = deadletter.Writer("g").headers(FAILED, extra)
    assert headers[-1] == (wire.H_TASK, b"proj.tasks.add")


def test_write_keeps_key_and_value_and_waits_for_the_acknowledgement() -> None:
    producer = FakeProducer()
    deadletter.Writer("g").write(producer, "orders.dlq", FAILED, timeout=7.0)
    [(topic, job_id, value, key, headers)] = producer.enqueued
    assert (topic, job_id, value, key) == ("orders.dlq", "", b"v", b"k")
    assert _text(headers)[wire.H_DLQ_GROUP] == "g"
    assert producer.handles[0].timeouts == [7.0]


def test_write_raises_when_the_dead_letter_is_not_acknowledged() -> None:
    producer = FakeProducer(fails=True)
    with pytest.raises(DeliveryError):
        deadletter.Writer("g").write(producer, "orders.dlq", FAILED, timeout=1.0)
    refusing = FakeProducer(refuses=True)
    with pytest.raises(EnqueueError):
        deadletter.Writer("g").write(refusing, "orders.dlq", FAILED, timeout=1.0)


def test_produce_writes_the_task_header_and_reports_the_delivery() -> None:
    producer = FakeProducer()
    reports: list[KafkaError | None] = []
    deadletter.Writer("celery").produce(
        producer,
        "celery.dlq",
        replace(FAILED, reason="rejected", attempts=1),
        lambda err, _msg: reports.append(err),
        extra=[(wire.H_TASK, b"proj.tasks.add")],
    )
    [(topic, value, key, headers)] = producer.produced
    assert (topic, value, key) == ("celery.dlq", b"v", b"k")
    text = _text(headers)
    assert (text[wire.H_DLQ_REASON], text[wire.H_DLQ_ATTEMPTS]) == ("rejected", "1")
    assert text[wire.H_TASK] == "proj.tasks.add"
    assert reports == []  # nothing waited for: the report comes when the producer serves it
    producer.report()
    assert reports == [None]


def test_produce_passes_a_failed_delivery_to_the_callback() -> None:
    producer = FakeProducer(fails=True)
    reports: list[KafkaError | None] = []
    deadletter.Writer("celery").produce(
        producer, "celery.dlq", FAILED, lambda err, _msg: reports.append(err)
    )
    producer.report()
    [error] = reports
    assert error is not None and error.code() == KafkaError._MSG_TIMED_OUT
