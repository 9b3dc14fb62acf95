"""The transactional producer's configuration, and when a continuation has no transaction."""

from __future__ import annotations

import threading

from kafka_jobs.context import JobContext
from kafka_jobs.settings import Settings
from kafka_jobs.transactions import continuation, transactional_config


def test_the_transactional_id_is_set_and_the_rest_is_the_producer_settings() -> None:
    settings = Settings(producer_config={"linger.ms": 7})
    config = transactional_config(settings, "g.canvas.t.0")
    assert config["transactional.id"] == "g.canvas.t.0"
    assert config["linger.ms"] == 7
    assert config["message.timeout.ms"] == 30_000  # delivery_timeout, under librdkafka's 60 s


def test_a_shorter_transaction_timeout_bounds_the_deliveries_too() -> None:
    # librdkafka refuses message.timeout.ms > transaction.timeout.ms on such a producer.
    settings = Settings(delivery_timeout=30, producer_config={"transaction.timeout.ms": 10_000})
    assert transactional_config(settings, "x")["message.timeout.ms"] == 10_000
    longer = Settings(delivery_timeout=5, producer_config={"transaction.timeout.ms": 10_000})
    assert transactional_config(longer, "x")["message.timeout.ms"] == 5_000


def _context(settings: Settings | None, metadata: object | None) -> JobContext:
    never = threading.Event()
    return JobContext(
        "t", "id", "topic", 0, 5, 1, None, {}, never, never, lambda _: None, settings, metadata
    )


def test_no_transaction_without_group_metadata_or_worker_settings() -> None:
    # Virtual partitions (no metadata: the offset cannot join) and a context built by
    # hand: the caller goes on without a transaction, no client is made.
    assert continuation(_context(Settings(), None), 1.0) is None
    assert continuation(_context(None, object()), 1.0) is None
