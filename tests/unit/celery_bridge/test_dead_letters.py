"""The bridge's dead-letter writer: a dead letter the broker refused is written again."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError

from celery_bridge import dead_letters
from celery_bridge.dead_letters import REASON_REJECTED, DeadLetterWriter, Rejected
from celery_bridge.fetched import Record
from celery_bridge.options import BridgeOptions


class FakeFetcher:
    grouped = True

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.owned = True
        self.done = threading.Event()

    def owns(self, record: Record) -> bool:
        return self.owned

    def ack(self, record: Record) -> None:
        self.acked.append(record.offset)
        self.done.set()


class NoTopics:
    def ensure(self, *args: Any) -> None:
        pass


class FlakyProducer:
    """Refuses the first `failures` dead letters (as a delivery report), then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.sent.append(topic)
        if self.failures:
            self.failures -= 1
            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
        else:
            on_delivery(None, None)


def _record() -> Record:
    return Record("q", 0, 7, None, b"body", [("task", b'"proj.add"')], generation=1)


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "RETRY_FIRST", 0.01)


def test_a_refused_dead_letter_is_written_again_and_acked_only_then() -> None:
    fetcher, producer = FakeFetcher(), FlakyProducer(failures=2)
    writer = DeadLetterWriter(BridgeOptions(), NoTopics(), producer)  # type: ignore[arg-type]
    writer.write(fetcher, _record(), "q", REASON_REJECTED, Rejected("q"))  # type: ignore[arg-type]
    assert fetcher.done.wait(5)
    assert producer.sent == ["q.dlq"] * 3
    assert fetcher.acked == [7]


def test_no_retry_once_the_partition_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "RETRY_FIRST", 0.3)  # room to revoke before it
    fetcher, producer = FakeFetcher(), FlakyProducer(failures=1)
    writer = DeadLetterWriter(BridgeOptions(), NoTopics(), producer)  # type: ignore[arg-type]
    writer.write(fetcher, _record(), "q", REASON_REJECTED, Rejected("q"))  # type: ignore[arg-type]
    fetcher.owned = False  # revoked before the retry: the next owner gets the record
    assert not fetcher.done.wait(1.0)
    assert producer.sent == ["q.dlq"]
    assert fetcher.acked == []
