"""Purging a queue: its group's committed offsets move to the end of its topic.

Kafka does not delete single records, so a purge is done the way Kafka's own
`kafka-consumer-groups --reset-offsets --to-latest` does it: the group's
committed offsets on every partition of the topic are set to the partition's
end, and the records between are never delivered to that group. The broker
accepts offsets for a group from outside only while the group has no member,
so a purge is refused while workers of the group are running (their positions
live in their memory and would be committed over the purge).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

from kafka_jobs.connection.admin import admin_client
from kafka_jobs.connection.client import Client, Key, Mark
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.settings import KafkaConfig

_COORDINATOR_MOVING = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
)


# The broker's refusals of offsets from outside a group that has members.
_MEMBERS_PRESENT = (
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
)


def _code(exc: KafkaException) -> int | None:
    """The librdkafka error code a KafkaException carries, if any."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


class GroupActive(KafkaJobsError):
    """The group has running members: its offsets cannot be moved from outside."""


def active_members(admin_config: KafkaConfig, group: str, timeout: float = 10.0) -> int:
    """How many members `group` has now (0 for an empty or unknown group)."""
    admin = admin_client(admin_config)
    deadline = time.monotonic() + timeout
    while True:  # bounded by `timeout`
        future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
        try:
            return len(future.result(timeout).members or [])
        except KafkaException as exc:
            # The group's coordinator moves or loads (a fresh cluster's offsets topic).
            if _code(exc) not in _COORDINATOR_MOVING:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass(frozen=True)
class Backlog:
    """The records of a topic a group has not consumed yet."""

    waiting: int
    ends: dict[int, int]  # partition -> end offset when counted


def backlog(
    consumer_config: KafkaConfig,
    topic: str,
    floor: Mapping[int, int] | None = None,
    timeout: float = 10.0,
) -> Backlog:
    """Records of `topic` above the group's committed offsets and above `floor`.

    The group is `consumer_config["group.id"]`; a partition without a committed
    offset counts from its first record (queue consumers read from the earliest).
    `floor` (partition -> offset) raises the start, e.g. to an earlier purge's mark.
    """
    client = Client({**consumer_config, "enable.auto.commit": False})
    try:
        partitions = client.partitions_of(topic, timeout)
        if partitions is None:
            return Backlog(0, {})
        keys: list[Key] = [(topic, p) for p in partitions]
        committed = {(tp.topic, tp.partition): tp.offset for tp in client.committed(keys, timeout)}
        waiting, ends = 0, {}
        for key in keys:
            low, high = client.watermarks(key, timeout)
            start = max(committed.get(key, -1), low, (floor or {}).get(key[1], -1))
            ends[key[1]] = high
            waiting += max(0, high - start)
        return Backlog(waiting, ends)
    finally:
        client.close()


def commit_ends(
    consumer_config: KafkaConfig, topic: str, ends: Mapping[int, int], timeout: float = 10.0
) -> None:
    """Commit `ends` as the group's offsets of `topic`; `GroupActive` if the broker refuses."""
    group = str(consumer_config["group.id"])
    client = Client({**consumer_config, "enable.auto.commit": False})
    try:
        client.commit([Mark((topic, p), end) for p, end in ends.items()], asynchronous=False)
    except KafkaException as exc:
        if _code(exc) in _MEMBERS_PRESENT:
            # A member joined since the check, or the broker lists none.
            raise GroupActive(
                f"cannot purge {topic}: consumer group {group!r} has running"
                f" members ({exc}); stop its workers first"
            ) from exc
        raise
    finally:
        client.close()


def skip_to_end(
    consumer_config: KafkaConfig, admin_config: KafkaConfig, topic: str, timeout: float = 10.0
) -> int:
    """Move the group's committed offsets on `topic` to its end; the records skipped.

    The group is `consumer_config["group.id"]`. Raises `GroupActive` while the group
    has members.
    """
    group = str(consumer_config["group.id"])
    members = active_members(admin_config, group, timeout)
    if members:
        raise GroupActive(
            f"cannot purge {topic}: consumer group {group!r} has {members} running member(s);"
            " stop its workers first (Kafka accepts offsets from outside a group only while"
            " it is empty)"
        )
    found = backlog(consumer_config, topic, timeout=timeout)
    if found.waiting:
        commit_ends(consumer_config, topic, found.ends, timeout)
    return found.waiting
