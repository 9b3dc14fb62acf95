"""Celery features on the kafkajobs:// transport, with an in-process worker (threads pool)."""

from __future__ import annotations

import time
from typing import Any

from celery import chain, chord, group
from confluent_kafka import Consumer, TopicPartition

from kafka_jobs.testing import BrokerInfo
from tests.bridge import proj


def test_delay_and_get(celery_session_worker: Any) -> None:
    assert proj.add.delay(2, 3).get(timeout=30) == 5


def test_countdown_runs_no_earlier(celery_session_worker: Any) -> None:
    sent = time.time()
    result = proj.where.apply_async(countdown=2).get(timeout=30)
    assert result["ran_at"] - sent >= 1.9


def test_eta(celery_session_worker: Any) -> None:
    from datetime import UTC, datetime, timedelta

    eta = datetime.now(UTC) + timedelta(seconds=1.5)
    result = proj.where.apply_async(eta=eta).get(timeout=30)
    assert result["ran_at"] >= eta.timestamp() - 0.1


def test_retry(celery_session_worker: Any) -> None:
    # Fails twice, retried through the broker each time, then succeeds on the third run.
    assert proj.flaky.delay("retry-key", 2).get(timeout=30) == 3


def test_reject_with_requeue_delivers_again(celery_session_worker: Any) -> None:
    assert proj.reject_once.delay("requeue-key").get(timeout=30) == 2


def test_chain_group_chord(celery_session_worker: Any) -> None:
    assert chain(proj.add.s(1, 2), proj.add.s(3), proj.mul.s(10)).delay().get(timeout=30) == 60
    assert group(proj.add.s(i, i) for i in range(10)).delay().get(timeout=30) == [
        2 * i for i in range(10)
    ]
    assert chord(proj.add.s(i, 1) for i in range(10))(proj.xsum.s()).get(timeout=60) == 55


def test_routing_to_two_queues(celery_session_worker: Any, celery_config: dict[str, Any]) -> None:
    default = celery_config["task_default_queue"]
    assert proj.where.delay().get(timeout=30)["routing_key"] == default
    # proj.mul is routed to the second queue (task_routes); where() can be sent there too.
    assert proj.where.apply_async(queue=default + "-b").get(timeout=30)["routing_key"] == (
        default + "-b"
    )
    assert proj.mul.delay(6, 7).get(timeout=30) == 42


def test_partition_key_sets_the_record_key(
    celery_session_worker: Any, celery_config: dict[str, Any], kafka_broker: BrokerInfo
) -> None:
    queue = celery_config["task_default_queue"]
    results = [proj.add.apply_async((i, 0), partition_key="customer-7") for i in range(5)] + [
        proj.add.apply_async((i, 0), headers={"partition_key": "customer-8"}) for i in range(5)
    ]
    assert [r.get(timeout=30) for r in results] == [*range(5), *range(5)]
    ids = {
        r.id: key for r, key in zip(results, [b"customer-7"] * 5 + [b"customer-8"] * 5, strict=True)
    }
    found = _records_by_task_id(kafka_broker, queue, set(ids))
    assert {task_id: record[0] for task_id, record in found.items()} == ids
    # Same key, same partition.
    assert len({found[r.id][1] for r in results[:5]}) == 1
    # Celery's headers travel as Kafka headers.
    headers = dict(found[results[0].id][2])
    assert headers["task"] == b'"proj.add"'
    assert headers["content-type"] == b"application/json"


def _records_by_task_id(
    broker: BrokerInfo, topic: str, ids: set[str]
) -> dict[str, tuple[bytes | None, int, list[tuple[str, bytes]]]]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "inspect"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: dict[str, tuple[bytes | None, int, list[tuple[str, bytes]]]] = {}
    deadline = time.monotonic() + 20
    try:
        while len(found) < len(ids) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            headers = list(message.headers() or [])
            task_id = dict(headers).get("id", b"").strip(b'"').decode()
            if task_id in ids:
                found[task_id] = (message.key(), message.partition() or 0, headers)
    finally:
        consumer.close()
    return found


def test_queues_are_topics_created_on_declare(
    celery_session_worker: Any, celery_config: dict[str, Any], kafka_broker: BrokerInfo
) -> None:
    queue = celery_config["task_default_queue"]
    topics = kafka_broker.admin().list_topics(timeout=10).topics
    for name in (queue, queue + "-b"):
        assert len(topics[name].partitions) == 6  # topic_partitions' default
