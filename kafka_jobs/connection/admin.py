"""Admin operations shared by the worker, the bridge, probes and tests."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


def create_topic(
    config: Mapping[str, Any], name: str, partitions: int = 1, timeout: float = 15.0
) -> str:
    """Create a topic (the broker's default replication factor) and wait until its
    metadata shows every partition; returns its name."""
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
