"""Records a Celery worker cannot use go to the queue's dead-letter topic; the worker goes on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_jobs import App, dlq
from kafka_jobs.testing import BrokerInfo, wait_until
from tests.bridge import proj


def _dead_letters(broker: BrokerInfo, topic: str) -> list[dict[str, str]]:
    # A fresh reader's first fetch of some partitions can lag the others by more than a
    # second on a loaded machine: a short idle would end the read before they arrive.
    found = dlq.read(App(bootstrap_servers=broker.bootstrap_servers), topic, idle=3.0, timeout=20)
    return [
        letter.info | {"value": (letter.value or b"").decode(errors="replace")}
        for letter in found.letters
    ]


def _ends(broker: BrokerInfo, queue: str) -> dict[str, list[tuple[int, int]]]:
    """(low, high) watermarks of the queue's and its dead-letter topic's partitions."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "ends"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        return {
            name: [
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                for p in topics[name].partitions
            ]
            for name in (queue, f"{queue}.dlq")
            if name in topics
        }
    finally:
        consumer.close()


def test_unusable_records_are_dead_lettered_and_the_worker_goes_on(
    celery_session_worker: Any,
    celery_config: dict[str, Any],
    kafka_broker: BrokerInfo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = celery_config["task_default_queue"]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    kombu = [
        ("kombu-version", b"1"),
        ("kombu-exchange", queue.encode()),
        ("kombu-routing-key", queue.encode()),
        ("content-type", b"application/json"),
        ("content-encoding", b"utf-8"),
    ]
    # 1. Not a message of this transport at all.
    producer.produce(queue, b"\x00garbage", headers=[("x", b"y")])
    # 2. A Celery task whose body is not JSON.
    producer.produce(
        queue, b"{not json", headers=[*kombu, ("task", b'"proj.add"'), ("id", b'"bad-body"')]
    )
    # 3. A task this worker does not know.
    body = json.dumps(
        [[1, 2], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    producer.produce(
        queue,
        body.encode(),
        headers=[*kombu, ("task", b'"proj.nope"'), ("id", b'"unknown"'), ("lang", b'"py"')],
    )
    assert producer.flush(10) == 0

    assert proj.add.delay(20, 22).get(timeout=30) == 42  # the worker goes on

    letters: list[dict[str, str]] = []

    def three_letters() -> bool:
        letters[:] = _dead_letters(kafka_broker, f"{queue}.dlq")
        return len(letters) >= 3

    assert wait_until(three_letters, 45, interval=0.5), (
        letters,
        _ends(kafka_broker, queue),
        [r.getMessage() for r in caplog.records if r.name.startswith("celery_bridge")],
    )
    reasons = {letter["reason"]: letter for letter in letters}
    assert set(reasons) == {"not-a-kombu-message", "not-decodable", "rejected"}, letters
    assert reasons["not-a-kombu-message"]["value"] == "\x00garbage"
    assert reasons["not-decodable"]["value"] == "{not json"
    assert reasons["rejected"]["topic"] == queue
    assert all(
        letter["group"] == celery_config["broker_transport_options"]["group_id"]
        for letter in letters
    )
