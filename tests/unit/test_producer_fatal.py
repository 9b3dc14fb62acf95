"""A producer client that fails for good (fatal error) is replaced; its jobs fail, loudly."""

from __future__ import annotations

import os
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_jobs.errors import DeliveryError
from kafka_jobs.producer import JobProducer

FATAL = KafkaError(KafkaError.UNKNOWN_PRODUCER_ID, "unknown producer id", fatal=True)


class DyingClient:
    """Accepts records, then raises a fatal error from flush() without reporting them."""

    def __init__(self) -> None:
        self.produced: list[Any] = []
        self.purged = False

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.produced.append(kwargs["on_delivery"])

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        raise KafkaException(FATAL)

    def purge(self) -> None:
        self.purged = True


class HealthyClient(DyingClient):
    def flush(self, timeout: float) -> int:
        for report in self.produced:
            report(None, _Delivered())
        self.produced.clear()
        return 0


class _Delivered:
    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def _producer(client: DyingClient, monkeypatch: pytest.MonkeyPatch) -> JobProducer:
    producer = JobProducer({"bootstrap.servers": "unused:1"}, delivery_timeout=1.0)
    producer._client, producer._pid = client, os.getpid()  # type: ignore[assignment]
    monkeypatch.setattr("kafka_jobs.producer.Producer", lambda conf: HealthyClient())
    return producer


def test_fatal_flush_fails_every_unreported_job_and_replaces_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dying = DyingClient()
    producer = _producer(dying, monkeypatch)
    handles = [producer.enqueue("t", f"job-{n}", b"{}", None, []) for n in range(3)]
    with pytest.raises(DeliveryError) as failed:
        producer.flush(1.0)
    assert sorted(job_id for job_id, _ in failed.value.failures) == ["job-0", "job-1", "job-2"]
    assert all(not h.delivered for h in handles) and dying.purged
    # The next enqueue goes through a new client and is delivered.
    again = producer.enqueue("t", "job-3", b"{}", None, [])
    producer.flush(1.0)
    assert again.delivered and again.offset == 7
    assert isinstance(producer.client, HealthyClient)


def test_a_fatal_error_noted_by_the_error_callback_replaces_the_client_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _producer(DyingClient(), monkeypatch)
    stranded = producer.enqueue("t", "job-0", b"{}", None, [])
    producer._on_error(FATAL)
    assert isinstance(producer.client, HealthyClient)
    with pytest.raises(DeliveryError, match="job-0"):
        stranded.wait(1.0)


def test_the_enqueue_that_finds_a_stuck_client_is_not_failed_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _producer(DyingClient(), monkeypatch)
    stranded = producer.enqueue("t", "job-0", b"{}", None, [])
    producer._stuck = "nothing delivered for 5s"
    fresh = producer.enqueue("t", "job-1", b"{}", None, [])
    with pytest.raises(DeliveryError, match="job-0"):
        stranded.wait(1.0)
    producer.flush(1.0)  # only the new client's delivery: job-1 went there
    assert fresh.delivered


def test_a_client_call_failing_without_a_reason_replaces_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(DyingClient):
        def flush(self, timeout: float) -> int:
            raise SystemError("<method 'flush'> returned NULL without setting an exception")

    producer = _producer(Broken(), monkeypatch)
    stranded = producer.enqueue("t", "job-0", b"{}", None, [])
    with pytest.raises(DeliveryError, match="client call failed"):
        producer.flush(1.0)
    assert not stranded.delivered
    again = producer.enqueue("t", "job-1", b"{}", None, [])
    producer.flush(1.0)
    assert again.delivered
