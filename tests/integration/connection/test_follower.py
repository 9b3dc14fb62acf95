"""A Follower reads a topic from its beginning, then follows it; a missing topic once made."""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import Message, Producer

from kafka_jobs.connection.follower import Follower
from kafka_jobs.testing import BrokerInfo, create_topic, unique_name, wait_until


def _collector() -> tuple[list[bytes], Callable[[Message], None]]:
    seen: list[bytes] = []
    lock = threading.Lock()

    def on_record(message: Message) -> None:
        with lock:
            seen.append(message.value() or b"")

    return seen, on_record


def _write(broker: BrokerInfo, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for n, value in enumerate(values):
        producer.produce(topic, value, key=str(n).encode(), partition=n % 2)
    assert producer.flush(10) == 0


def test_loads_what_the_topic_held_then_follows(
    kafka_broker: BrokerInfo, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    _write(kafka_broker, topic, [b"a", b"b", b"c"])
    seen, on_record = _collector()
    config = {"bootstrap.servers": kafka_broker.bootstrap_servers}
    follower = Follower(config, topic, on_record, name="test-follower")
    try:
        assert follower.wait_loaded(20)
        assert sorted(seen) == [b"a", b"b", b"c"]  # all of it, before loaded
        _write(kafka_broker, topic, [b"d"])
        assert wait_until(lambda: b"d" in seen, 20), seen
    finally:
        follower.close()


def test_a_topic_created_later_is_followed_once_it_exists(kafka_broker: BrokerInfo) -> None:
    topic = unique_name("later")
    seen, on_record = _collector()
    config = {"bootstrap.servers": kafka_broker.bootstrap_servers}
    follower = Follower(config, topic, on_record, name="test-follower")
    try:
        assert follower.wait_loaded(20)  # nothing to load
        create_topic(kafka_broker.bootstrap_servers, topic, 2)
        _write(kafka_broker, topic, [b"x", b"y"])
        assert wait_until(lambda: sorted(seen) == [b"x", b"y"], 30), seen
    finally:
        follower.close()
