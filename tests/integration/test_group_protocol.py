"""The consumer group protocol is one setting: classic, or KIP-848's `consumer`.

The broker is asked which kind of group the workers formed, so a setting that
silently fell back to the classic protocol fails here.
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer, ConsumerGroupType

from kafka_jobs import current_job
from kafka_jobs.testing import (
    BrokerInfo,
    broker_supports_consumer_protocol,
    create_topic,
    unique_name,
    wait_until,
)


@pytest.fixture(scope="module")
def consumer_protocol(kafka_broker: BrokerInfo) -> bool:
    return broker_supports_consumer_protocol(kafka_broker.bootstrap_servers)


@pytest.fixture(scope="module")
def reports_group_types(kafka_broker: BrokerInfo) -> bool:
    """Probe: is a plain classic consumer's group described as CLASSIC?"""
    topic = create_topic(kafka_broker.bootstrap_servers, unique_name("type-probe"))
    group = unique_name("type-probe")
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": group})
    try:
        consumer.subscribe([topic])
        wait_until(lambda: consumer.poll(0.1) is None and bool(consumer.assignment()), 30)
        return group_type(kafka_broker, group) == ConsumerGroupType.CLASSIC
    finally:
        consumer.close()


def group_type(broker: BrokerInfo, group: str) -> ConsumerGroupType:
    admin = broker.admin()  # kept referenced: a collected client never completes its futures
    (future,) = admin.describe_consumer_groups([group], request_timeout=10).values()
    return future.result(15).type


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_workers_form_a_group_of_the_chosen_protocol_and_share_partitions(
    kafka_broker: BrokerInfo,
    kafka_app,
    new_topic,
    protocol: str,
    consumer_protocol: bool,
    reports_group_types: bool,
) -> None:
    if protocol == "consumer" and not consumer_protocol:
        pytest.skip("probe: no assignment for a group.protocol=consumer member (KIP-848)")
    topic = new_topic(partitions=4)
    first = kafka_app(default_topic=topic, group_protocol=protocol)
    second = kafka_app(
        default_topic=topic, group_protocol=protocol, group_id=first.settings.group_id
    )
    ran: dict[int, int] = {}
    lock = threading.Lock()

    for app in (first, second):

        @app.job(key="n", name="proto.step")
        def step(n: int) -> None:
            with lock:
                ran[n] = current_job().partition

    expected = {"classic": ConsumerGroupType.CLASSIC, "consumer": ConsumerGroupType.CONSUMER}
    with first.worker():
        assert wait_until(lambda: len(first.assignments().get(topic, [])) == 4, timeout=30)
        # A broker that misreports group types (the embedded one) cannot tell.
        if reports_group_types:
            assert group_type(kafka_broker, first.settings.group_id) == expected[protocol]
        with second.worker():
            # The partitions are shared between the two processes' workers.
            assert wait_until(
                lambda: (
                    len(first.assignments().get(topic, [])) == 2
                    and len(second.assignments().get(topic, [])) == 2
                ),
                timeout=60,
            )
            for n in range(40):
                first.tasks["proto.step"].delay(n)
            first.flush(10)
            assert wait_until(lambda: len(ran) == 40, timeout=60)
    assert set(ran) == set(range(40))
    for partition in range(4):
        assert kafka_broker.committed(first.settings.group_id, topic, partition) >= 0
