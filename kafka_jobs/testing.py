"""pytest plugin: a real Kafka-protocol broker for tests, and helpers around it.

Enable with `pytest -p kafka_jobs.testing` or `pytest_plugins = ["kafka_jobs.testing"]`.

- `kafka_broker` (session): one broker for the whole session, chosen by
  `KAFKA_JOBS_TEST_BROKER`: `embedded` (default: Tansu on a free loopback port),
  `apache` (one Apache Kafka node) or `apache3` (three nodes, replication factor 3,
  min.insync.replicas 2), all started here and stopped at the end. An external
  broker via `KAFKA_BOOTSTRAP_SERVERS` takes precedence.
- `new_topic(partitions=1)`: creates a topic with a unique name.
- `new_group()`: a unique consumer group id.
- `kafka_app(**settings)`: an `App` on the broker with short group timeouts; the
  test fails if the worker swallowed an internal error (`worker.error` event).
- `wait_until(predicate, timeout)`: polls until true; never a fixed sleep.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from kafka_jobs.apache import ApacheKafkaCluster
from kafka_jobs.app import App
from kafka_jobs.broker import EmbeddedBroker
from kafka_jobs.connection import admin, probes
from kafka_jobs.connection.client import read_committed_offset
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.settings import ClientConfig, Settings

# Short group timeouts: the embedded broker completes a join after about half
# of session.timeout.ms, and a killed member is noticed after all of it.
TEST_CONSUMER_CONFIG: ClientConfig = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


# The group protocol of the session's workers: KAFKA_JOBS_GROUP_PROTOCOL, as for workers.
TEST_GROUP_PROTOCOL = os.environ.get("KAFKA_JOBS_GROUP_PROTOCOL") or "classic"


@dataclass(frozen=True)
class BrokerInfo:
    """The broker of this test session."""

    bootstrap_servers: str
    embedded: EmbeddedBroker | None
    cluster: ApacheKafkaCluster | None = None

    def admin(self) -> AdminClient:
        """An admin client on this broker."""
        return AdminClient({"bootstrap.servers": self.bootstrap_servers})

    def committed(self, group: str, topic: str, partition: int = 0) -> int:
        """The offset `group` has committed on a partition (negative when none)."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        return read_committed_offset(config, group, (topic, partition))

    def env(self) -> dict[str, str]:
        """Environment for a worker subprocess on this broker, with the test timeouts."""
        env = dict(os.environ)
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        for key, value in TEST_CONSUMER_CONFIG.items():
            env["KAFKA_JOBS_CONSUMER_" + key.upper().replace(".", "_")] = str(value)
        return env


def unique_name(prefix: str) -> str:
    """`prefix` plus a random suffix, for topics and groups no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(
    bootstrap_servers: str, name: str, partitions: int = 1, timeout: float = 15.0
) -> str:
    """Create a topic (the broker's default replication factor) and wait for its partitions."""
    return admin.create_topic({"bootstrap.servers": bootstrap_servers}, name, partitions, timeout)


def broker_returns_commit_metadata(bootstrap_servers: str) -> bool:
    """Probe: does the broker give back the metadata committed with an offset?

    The embedded development broker accepts it and returns none: tests of what a
    next owner reads skip there, naming this probe.
    """
    return probes.returns_commit_metadata({"bootstrap.servers": bootstrap_servers})


def broker_supports_consumer_protocol(bootstrap_servers: str, timeout: float = 10.0) -> bool:
    """Probe: does a `group.protocol=consumer` (KIP-848) member get an assignment here?"""
    return probes.supports_consumer_protocol({"bootstrap.servers": bootstrap_servers}, timeout)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (returns True) or `timeout` passes (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


TEST_BROKERS = {"embedded": 0, "apache": 1, "apache3": 3}  # name -> Apache Kafka nodes


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """The session's broker: `KAFKA_BOOTSTRAP_SERVERS`, else `KAFKA_JOBS_TEST_BROKER`'s."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield BrokerInfo(external, None)
        return
    choice = os.environ.get("KAFKA_JOBS_TEST_BROKER", "embedded")
    if choice not in TEST_BROKERS:
        raise pytest.UsageError(
            f"KAFKA_JOBS_TEST_BROKER={choice!r}: choose one of {', '.join(TEST_BROKERS)}"
        )
    if TEST_BROKERS[choice]:
        data = Path(tmp_path_factory.mktemp("apache-kafka"))
        cluster = ApacheKafkaCluster(brokers=TEST_BROKERS[choice], data=data).start()
        try:
            yield BrokerInfo(cluster.bootstrap_servers, None, cluster)
        finally:
            cluster.stop()
        return
    log_path = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    broker = EmbeddedBroker(log_path=log_path).start()
    try:
        yield BrokerInfo(broker.bootstrap_servers, broker)
    finally:
        broker.stop()


@pytest.fixture
def new_topic(kafka_broker: BrokerInfo) -> Callable[..., str]:
    """Factory: `new_topic(partitions=1, prefix="t")` creates a uniquely named topic."""

    def make(partitions: int = 1, prefix: str = "t") -> str:
        return create_topic(kafka_broker.bootstrap_servers, unique_name(prefix), partitions)

    return make


@pytest.fixture
def new_group() -> Callable[..., str]:
    """Factory: `new_group(prefix="g")` returns a unique consumer group id."""
    return lambda prefix="g": unique_name(prefix)


class AppFactory:
    """Builds Apps on the session broker and watches them for swallowed internal errors.

    Call it like `App(...)`; `allow("failure-handler")` accepts `worker.error`
    events from that place in a test that provokes them on purpose.
    """

    def __init__(self, broker: BrokerInfo) -> None:
        self.broker = broker
        self.apps: list[App] = []
        self.internal_errors: list[Event] = []
        self.allowed: set[str] = set()

    def __call__(self, **overrides: Any) -> App:
        """A new App on the session's broker with the test timeouts; `overrides` win."""
        consumer_config = {**TEST_CONSUMER_CONFIG, **overrides.pop("consumer_config", {})}
        overrides.setdefault("group_protocol", TEST_GROUP_PROTOCOL)
        settings = Settings(
            bootstrap_servers=self.broker.bootstrap_servers,
            group_id=overrides.pop("group_id", unique_name("g")),
            # Delayed jobs of one test must not be released by another test's workers.
            delay_topic_prefix=overrides.pop("delay_topic_prefix", unique_name("delay")),
            consumer_config=consumer_config,
            **overrides,
        )
        app = App(settings)
        app.events.subscribe(self._watch)
        self.apps.append(app)
        return app

    def allow(self, where: str) -> None:
        """Do not fail the test for internal errors reported from `where`."""
        self.allowed.add(where)

    def _watch(self, event: Event) -> None:
        if event.name == "worker.error" and event.payload.get("where") not in self.allowed:
            self.internal_errors.append(event)


@pytest.fixture
def kafka_app(kafka_broker: BrokerInfo) -> Iterator[AppFactory]:
    """Factory of Apps on the session broker; fails the test on swallowed internal errors."""
    factory = AppFactory(kafka_broker)
    yield factory
    for app in factory.apps:
        app.close(5)  # drop the client too, so it does not outlive the session's broker
    assert not factory.internal_errors, f"internal errors were swallowed: {factory.internal_errors}"
