"""Cancelling one queue's consumer on a channel that goes on consuming another queue.

Records of the cancelled queue that were already fetched are not delivered; they
must not be acked either (nobody has seen them): they are redelivered when the
queue is consumed again, and the group's commit mark then passes them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition
from kombu import Connection, Consumer, Exchange, Producer, Queue

from celery_bridge.testing import test_transport_options
from kafka_jobs.testing import BrokerInfo, unique_name, wait_until


def _committed(broker: BrokerInfo, group: str, topic: str) -> int:
    reader = KafkaConsumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        (tp,) = reader.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        reader.close()


def test_fetched_records_of_a_cancelled_queue_are_redelivered_and_committed_past(
    kafka_broker: BrokerInfo,
) -> None:
    options = test_transport_options(topic_partitions=1, commit_interval=0.2)
    group = options["group_id"]
    name_a, name_b = unique_name("cancel-a"), unique_name("cancel-b")
    queue_a = Queue(name_a, Exchange(name_a, "direct"), routing_key=name_a)
    queue_b = Queue(name_b, Exchange(name_b, "direct"), routing_key=name_b)
    received: list[tuple[str, Any]] = []

    def on_message(body: Any, message: Any) -> None:
        received.append((message.delivery_info["routing_key"], body))
        message.ack()

    def drain_until(done: Any, timeout: float = 60) -> bool:
        def step() -> bool:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
            return bool(done())

        return wait_until(step, timeout, interval=0)

    with Connection(
        f"kafkajobs://{kafka_broker.bootstrap_servers}", transport_options=options
    ) as conn:
        channel = conn.channel()
        producer = Producer(channel, serializer="json")
        for seq in range(10):
            producer.publish(seq, exchange=queue_a.exchange, routing_key=name_a, declare=[queue_a])
        channel.basic_qos(0, 1, False)  # one message at a time; the rest stays buffered
        consumer = Consumer(channel, [queue_a, queue_b], callbacks=[on_message], accept=["json"])
        consumer.consume()
        assert drain_until(lambda: received), "no message of queue A"
        fetcher = channel._group
        assert wait_until(lambda: fetcher.buffered() >= 9, 30), fetcher.buffered()

        # Cancel A; the channel goes on with B, taking (and not delivering) A's records.
        consumer.cancel_by_queue(name_a)
        producer.publish("b", exchange=queue_b.exchange, routing_key=name_b, declare=[queue_b])
        assert drain_until(lambda: (name_b, "b") in received), received
        assert [body for key, body in received if key == name_a] == [0]

        # Consumed again, A's other nine messages arrive: none was lost.
        consumer.add_queue(queue_a)
        consumer.consume()
        assert drain_until(lambda: len(received) >= 11), received
        assert sorted(body for key, body in received if key == name_a) == list(range(10))

        # And the commit mark passes them all.
        assert wait_until(lambda: _committed(kafka_broker, group, name_a) == 10, 30), _committed(
            kafka_broker, group, name_a
        )
