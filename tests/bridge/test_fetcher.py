"""The polling thread behind each channel, against the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer

from celery_bridge.fetched import Record
from celery_bridge.fetcher import Fetcher
from celery_bridge.options import BridgeOptions
from kafka_jobs.testing import TEST_CONSUMER_CONFIG, BrokerInfo, unique_name, wait_until


@pytest.fixture
def fetchers(kafka_broker: BrokerInfo) -> Iterator[Callable[..., Fetcher]]:
    made: list[Fetcher] = []
    options = BridgeOptions(
        bootstrap_servers=kafka_broker.bootstrap_servers, consumer_config=TEST_CONSUMER_CONFIG
    )

    def make(group: str | None, buffer_size: int = 1000, commit_interval: float = 0.2) -> Fetcher:
        fetcher = Fetcher(
            options.consumer_settings(group),
            grouped=group is not None,
            wake=lambda: None,
            buffer_size=buffer_size,
            commit_interval=commit_interval,
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def _produce(broker: BrokerInfo, topic: str, count: int, partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for seq in range(count):
        producer.produce(topic, str(seq).encode(), partition=partition)
    assert producer.flush(10) == 0


def _take(fetcher: Fetcher, count: int, timeout: float = 30) -> list[Record]:
    taken: list[Record] = []

    def enough() -> bool:
        while len(taken) < count and (record := fetcher.take()) is not None:
            taken.append(record)
        return len(taken) >= count

    assert wait_until(enough, timeout), f"took {len(taken)} of {count}"
    return taken


def test_a_full_buffer_pauses_the_partitions_and_polling_goes_on(
    fetchers: Callable[..., Fetcher], new_topic: Callable[..., str], kafka_broker: BrokerInfo
) -> None:
    topic = new_topic()
    _produce(kafka_broker, topic, 300)
    fetcher = fetchers(unique_name("g"), buffer_size=20)
    fetcher.subscribe({topic})
    assert wait_until(lambda: fetcher.paused, 30)
    assert fetcher.buffered() <= 20
    values: list[int] = []
    for _ in range(40):  # bounded: 300 records in takes of at most 20
        values += [int(r.value or b"-1") for r in _take(fetcher, min(15, 300 - len(values)))]
        assert fetcher.buffered() <= 20
        if len(values) == 300:
            break
    assert values == list(range(300))  # in order, none skipped while pausing and resuming


def test_commits_stop_below_the_lowest_unacked_record(
    fetchers: Callable[..., Fetcher], new_topic: Callable[..., str], kafka_broker: BrokerInfo
) -> None:
    topic, group = new_topic(), unique_name("g")
    _produce(kafka_broker, topic, 10)
    fetcher = fetchers(group)
    fetcher.subscribe({topic})
    records = _take(fetcher, 10)
    for record in (records[i] for i in (0, 1, 2, 5, 6, 7)):
        fetcher.ack(record)
    assert wait_until(lambda: kafka_broker.committed(group, topic) == 3, 10)
    fetcher.ack(records[4])
    fetcher.ack(records[3])
    assert wait_until(lambda: kafka_broker.committed(group, topic) == 8, 10)


def test_requeued_record_comes_first(
    fetchers: Callable[..., Fetcher], new_topic: Callable[..., str], kafka_broker: BrokerInfo
) -> None:
    topic = new_topic()
    _produce(kafka_broker, topic, 3)
    fetcher = fetchers(unique_name("g"))
    fetcher.subscribe({topic})
    first = _take(fetcher, 1)[0]
    fetcher.requeue(first)
    again = _take(fetcher, 3)
    assert [r.offset for r in again] == [0, 1, 2] and again[0].redelivered


def test_revoked_partitions_lose_their_buffer_and_stale_acks(
    fetchers: Callable[..., Fetcher], new_topic: Callable[..., str], kafka_broker: BrokerInfo
) -> None:
    topic, group = new_topic(partitions=2), unique_name("g")
    for partition in (0, 1):
        _produce(kafka_broker, topic, 5, partition)
    first = fetchers(group)
    first.subscribe({topic})
    taken = _take(first, 10)  # delivered, never acked
    for partition in (0, 1):
        _produce(kafka_broker, topic, 5, partition)
    assert wait_until(lambda: first.buffered() == 10, 20)
    second = fetchers(group)
    second.subscribe({topic})
    # Cooperative rebalance: one partition moves to the second member. Nothing of it
    # was acked, so the second member starts from its beginning.
    got = _take(second, 10)
    moved = got[0].partition
    assert [(r.partition, r.offset) for r in got] == [(moved, offset) for offset in range(10)]
    kept = [first.take() for _ in range(first.buffered())]
    assert [r.partition for r in kept if r is not None] == [1 - moved] * 5
    # Acks of records fetched before the move must not commit for the new owner.
    for record in taken:
        first.ack(record)
    assert wait_until(lambda: kafka_broker.committed(group, topic, 1 - moved) == 5, 10)
    assert kafka_broker.committed(group, topic, moved) < 0
