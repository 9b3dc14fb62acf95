"""Topic creation, shared by the worker, the App, the Celery bridge, probes and tests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import cast

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from kafka_jobs.settings import KafkaConfig


def admin_client(config: KafkaConfig) -> AdminClient:
    """An admin client configured by `config` (callbacks such as `error_cb` and `oauth_cb` too)."""
    # confluent_kafka's stub types AdminClient's conf as scalars only, yet the client
    # takes the same callbacks as Consumer and Producer (oauth_cb for SASL/OAUTHBEARER).
    return AdminClient(cast(dict[str, str | int | float | bool], dict(config)))


class TopicCreationFailed(Exception):
    """The broker refused to create a topic (other than because it exists already)."""

    def __init__(self, topic: str, cause: BaseException) -> None:
        super().__init__(f"cannot create topic {topic!r}: {cause}")
        self.topic = topic


def create_missing(
    admin: AdminClient,
    topics: Iterable[str],
    partitions: int = 1,
    replication_factor: int = -1,
    timeout: float = 15.0,
    config: Mapping[str, str] | None = None,
) -> list[str]:
    """Create those of `topics` the cluster does not list yet; returns the ones created.

    `replication_factor=-1` takes the broker's `default.replication.factor`. A topic
    created meanwhile by someone else counts as existing. Listing errors propagate
    as KafkaException; a refused creation raises `TopicCreationFailed`.
    """
    wanted = list(topics)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, partitions, replication_factor, config=dict(config or {})) for t in missing],
        request_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicCreationFailed(topic, exc) from exc
    return missing


def create_topic(config: KafkaConfig, name: str, partitions: int = 1, timeout: float = 15.0) -> str:
    """Create a topic and wait until its metadata shows every partition; returns its name.

    The replication factor is the broker's default.
    """
    admin = admin_client(config)
    for future in admin.create_topics([NewTopic(name, partitions, -1)]).values():
        future.result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return name
        time.sleep(0.05)
    raise TimeoutError(f"topic {name} did not appear within {timeout}s")


def partition_count(config: KafkaConfig, topic: str, timeout: float = 10.0) -> int:
    """How many partitions `topic` has (0 when it does not exist)."""
    metadata = admin_client(config).list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return 0
    return len(metadata.partitions)


def topic_config(config: KafkaConfig, topic: str, timeout: float = 10.0) -> dict[str, str]:
    """The topic's configuration as the broker reports it (DescribeConfigs).

    Raises KafkaException when the broker cannot describe it (e.g. no such topic).
    """
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = admin_client(config)  # held until the answer came: its end cancels the request
    entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    return {name: entry.value for name, entry in entries.items() if entry.value is not None}
