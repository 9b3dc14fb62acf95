"""The pytest-celery broker node for Kafka, which needs no Docker."""

from __future__ import annotations

import pytest
from pytest_celery import CeleryBrokerCluster

from celery_bridge.testing import KafkaTestBroker
from kafka_jobs.testing import BrokerInfo


def test_the_node_points_at_the_session_broker(
    celery_kafka_broker: KafkaTestBroker, kafka_broker: BrokerInfo
) -> None:
    assert celery_kafka_broker.ready()
    config = celery_kafka_broker.config()
    assert config["url"] == f"kafkajobs://{kafka_broker.bootstrap_servers}"
    cluster = CeleryBrokerCluster(celery_kafka_broker)
    assert cluster.config()["urls"] == [config["url"]]
    assert cluster.ready()


def test_the_shared_broker_is_not_killed_by_a_test(celery_kafka_broker: KafkaTestBroker) -> None:
    with pytest.raises(NotImplementedError, match="shared"):
        celery_kafka_broker.kill()
    assert celery_kafka_broker.ready()
