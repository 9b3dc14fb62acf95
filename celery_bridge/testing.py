"""Testing Celery apps on Kafka without Docker.

pytest-celery runs brokers in Docker containers and ships none for Kafka. This
module offers one that needs no Docker: `KafkaTestBroker`, a pytest-celery broker
node backed by the session's Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``, else the
embedded broker of `kafka_jobs.testing`), and fixtures for `celery.contrib.pytest`:

    # conftest.py
    pytest_plugins = ("kafka_jobs.testing", "celery_bridge.testing", "celery.contrib.pytest")

    @pytest.fixture(scope="session")
    def celery_config(celery_kafka_config):
        return {**celery_kafka_config, "result_backend": "db+sqlite:///results.sqlite"}

`celery_kafka_config` has the broker URL and transport options that suit tests
(short group session timeouts, a group id and default queue no other session uses).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pytest_celery import CeleryTestBroker  # type: ignore[import-untyped]

import celery_bridge  # registers kafkajobs://
from kafka_jobs.testing import TEST_CONSUMER_CONFIG, BrokerInfo

__all__ = ["KafkaBrokerHandle", "KafkaTestBroker", "test_transport_options"]


def test_transport_options(**overrides: object) -> dict[str, object]:
    """Transport options for tests: quick group joins, a unique group id."""
    options: dict[str, object] = {
        "group_id": f"celery-test-{uuid.uuid4().hex[:10]}",
        "consumer_config": dict(TEST_CONSUMER_CONFIG),
    }
    options.update(overrides)
    return options


test_transport_options.__test__ = False  # type: ignore[attr-defined]  # not a test


class KafkaBrokerHandle:
    """What pytest-celery expects of a broker "container", for a broker that is a process.

    The broker's life belongs to whoever started it (the test session): `kill`,
    `restart` and `teardown` are refused or no-ops rather than stopping a shared broker.
    """

    def __init__(self, broker: BrokerInfo) -> None:
        self.broker = broker
        self.id = f"kafka-{uuid.uuid4().hex[:12]}"
        self.name = "kafka"
        self.status = "running"

    @property
    def url(self) -> str:
        """The Celery broker URL."""
        return f"{celery_bridge.SCHEME}://{self.broker.bootstrap_servers}"

    @property
    def celeryconfig(self) -> dict[str, str]:
        """The node configuration pytest-celery reads."""
        return {"url": self.url, "host_url": self.url}

    def ready(self) -> bool:
        """True when the broker answers a metadata request."""
        try:
            self.broker.admin().list_topics(timeout=5)
        except Exception:
            return False
        return True

    def logs(self) -> str:
        """The embedded broker's log, when there is one."""
        embedded = self.broker.embedded
        path = getattr(embedded, "log_path", None)
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def reload(self) -> None:
        """Nothing to refresh."""

    def kill(self, signal: str | int = "SIGKILL") -> None:
        """Refused: the session's broker is shared by every test."""
        raise NotImplementedError("the session's Kafka broker is shared; it is not killed by tests")

    def restart(self, timeout: int | None = None) -> None:
        """Refused, as `kill`."""
        self.kill()

    def teardown(self) -> None:
        """The session stops its broker itself."""


class KafkaTestBroker(CeleryTestBroker):  # type: ignore[misc]
    """A pytest-celery broker node on Kafka, through the ``kafkajobs://`` transport."""

    @classmethod
    def default_config(cls) -> dict[str, str]:
        """The URL when no broker is given (a local Kafka)."""
        url = f"{celery_bridge.SCHEME}://localhost:9092"
        return {"url": url, "host_url": url}


@pytest.fixture(scope="session")
def celery_kafka_broker(kafka_broker: BrokerInfo) -> Iterator[KafkaTestBroker]:
    """The session's Kafka broker as a pytest-celery broker node."""
    node = KafkaTestBroker(KafkaBrokerHandle(kafka_broker))
    yield node


@pytest.fixture(scope="session")
def celery_kafka_config(celery_kafka_broker: KafkaTestBroker) -> dict[str, object]:
    """Celery settings for this broker: URL, test transport options, a unique queue."""
    return {
        "broker_url": celery_kafka_broker.config()["url"],
        "broker_transport_options": test_transport_options(),
        "task_default_queue": f"celery-{uuid.uuid4().hex[:10]}",
        "broker_connection_retry_on_startup": True,
    }
