"""Broker feature probes: what a broker does, found out by trying it, never by its name.

Each probe creates its own throwaway topic and group, so it can run against any
cluster; `config` is a librdkafka client configuration (SASL/SSL pass through).
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import KafkaException, Producer
from confluent_kafka.cimpl import NewPartitions

from kafka_jobs.connection.admin import admin_client, create_topic
from kafka_jobs.connection.client import Client, Mark
from kafka_jobs.settings import KafkaConfig


def _name(kind: str) -> str:
    return f"kafka-jobs-probe-{kind}-{uuid.uuid4().hex[:10]}"


def returns_commit_metadata(config: KafkaConfig) -> bool:
    """Whether the broker gives back the metadata committed with an offset."""
    topic = create_topic(config, _name("metadata"))
    consumer = Client({**config, "group.id": _name("metadata")})
    try:
        consumer.commit([Mark((topic, 0), 0, "probe")], asynchronous=False)
        stored = consumer.committed([(topic, 0)])
        return bool(stored and stored[0].metadata == "probe")
    finally:
        consumer.close()


def supports_consumer_protocol(config: KafkaConfig, timeout: float = 10.0) -> bool:
    """Whether a `group.protocol=consumer` (KIP-848) member gets an assignment."""
    topic = create_topic(config, _name("kip848"))
    consumer = Client({**config, "group.id": _name("kip848"), "group.protocol": "consumer"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(record.error() is not None for record in consumer.poll(1, 0.2)):
                return False  # e.g. the broker does not know ConsumerGroupHeartbeat
            if consumer.assignment():
                return True
        return False
    except KafkaException:
        return False
    finally:
        consumer.close()


def _read_all(config: KafkaConfig, topic: str, isolation: str, count: int) -> list[bytes]:
    """Up to `count` values of partition 0 (bounded: ends at the end offset or after 5 s)."""
    consumer = Client(
        {**config, "group.id": _name("reader"), "isolation.level": isolation,
         "enable.partition.eof": True}
    )  # fmt: skip
    consumer.assign({(topic, 0): 0})
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(values) < count:
            for record in consumer.poll(1, 0.2):
                if record.error() is not None:
                    return values  # end of partition
                values.append(record.value() or b"")
    finally:
        consumer.close()
    return values


def hides_aborted_records(config: KafkaConfig) -> bool:
    """Whether read_committed readers skip records of an aborted transaction."""
    topic = create_topic(config, _name("abort"))
    producer = Producer({**config, "transactional.id": _name("abort")})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush(10)  # on the broker before the abort: a record still queued is just dropped
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(10)
    return _read_all(config, topic, "read_committed", 2) == [b"committed"]


def end_offsets_follow_batches(config: KafkaConfig, records: int = 20) -> tuple[bool, int]:
    """Whether one batched produce of `records` records leaves the end offset at `records`.

    Returns (exact, the end offset the broker reported).
    """
    topic = create_topic(config, _name("end"))
    producer = Producer({**config, "linger.ms": 50})
    for n in range(records):
        producer.produce(topic, str(n).encode())
    producer.flush(10)
    consumer = Client({**config, "group.id": _name("end")})
    try:
        end = consumer.watermarks((topic, 0))[1]
    finally:
        consumer.close()
    return end == records, end


def creates_partitions(config: KafkaConfig) -> str | None:
    """None when the broker grows a topic (CreatePartitions), else its refusal."""
    topic = create_topic(config, _name("grow"))
    admin = admin_client(config)
    try:
        admin.create_partitions([NewPartitions(topic, 2)])[topic].result(15)
    except KafkaException as exc:
        return str(exc)
    return None
