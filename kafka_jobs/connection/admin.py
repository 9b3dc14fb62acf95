"""Topic creation, shared by the worker, the App, the Celery bridge, probes and tests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


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


def create_topic(
    config: Mapping[str, Any], name: str, partitions: int = 1, timeout: float = 15.0
) -> str:
    """Create a topic and wait until its metadata shows every partition; returns its name.

    The replication factor is the broker's default.
    """
    admin = AdminClient(dict(config))
    for future in admin.create_topics([NewTopic(name, partitions, -1)]).values():
        future.result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return name
        time.sleep(0.05)
    raise TimeoutError(f"topic {name} did not appear within {timeout}s")
