"""The one place kafka-jobs builds librdkafka consumers and calls their group operations.

Every consumer of the library goes through `Client`: the worker's listeners, the
delay dispatcher and its cancellation reader, the Celery bridge's fetchers, the
status and dead-letter readers, the broker probes and the test plugin. So a fix
to subscribing, pausing, seeking or committing is made once, here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_jobs.settings import ClientConfig, KafkaConfig

log = logging.getLogger("kafka_jobs.connection")

Key = tuple[str, int]
"""(topic, partition)."""

CommitCallback = Callable[[KafkaError | None, list[TopicPartition]], None]


@dataclass(frozen=True, slots=True)
class Mark:
    """An offset to commit for one partition: the next record to read, and its metadata."""

    key: Key
    offset: int
    metadata: str = ""

    def partition(self) -> TopicPartition:
        """As librdkafka takes it (empty metadata is left out)."""
        if self.metadata:
            return TopicPartition(self.key[0], self.key[1], self.offset, self.metadata)
        return TopicPartition(self.key[0], self.key[1], self.offset)


class RebalanceListener(Protocol):
    """What a client's owner does when the group moves partitions.

    Called inside `Client.poll()`, on the owner thread, with (topic, partition) keys.
    """

    def assigned(self, keys: list[Key]) -> None:
        """The partitions are ours from now on."""

    def revoked(self, keys: list[Key]) -> None:
        """The partitions go to another member after this returns: commit what is done."""

    def lost(self, keys: list[Key]) -> None:
        """The partitions may belong to another member already: commit nothing for them."""


def keys_of(partitions: Iterable[TopicPartition]) -> list[Key]:
    """(topic, partition) keys of librdkafka partitions."""
    return [(tp.topic, tp.partition) for tp in partitions]


class Client:
    """One librdkafka consumer, in a group or reading assigned partitions.

    Thread contract: built, polled and closed by one owner thread; every call
    below is made on it (librdkafka serves the rebalance, commit and statistics
    callbacks inside `poll()`, so they run on that thread too).
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        on_commit: CommitCallback | None = None,
        on_stats: Callable[[str], None] | None = None,
    ) -> None:
        settings: ClientConfig = dict(config)
        settings.setdefault("group.id", f"kafka-jobs-reader-{uuid.uuid4().hex}")
        if on_commit is not None:
            settings["on_commit"] = on_commit
        if on_stats is not None:
            settings["stats_cb"] = on_stats
        self._consumer = Consumer(settings)

    # --- membership -------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for `topics`; an empty list leaves it (librdkafka refuses [])."""
        if not topics:
            self._consumer.unsubscribe()
            return
        if listener is None:
            self._consumer.subscribe(list(topics))
            return
        self._consumer.subscribe(
            list(topics),
            on_assign=lambda _c, partitions: listener.assigned(keys_of(partitions)),
            on_revoke=lambda _c, partitions: listener.revoked(keys_of(partitions)),
            on_lost=lambda _c, partitions: listener.lost(keys_of(partitions)),
        )

    def assign(self, starts: Mapping[Key, int]) -> None:
        """Read these partitions from these offsets, outside any group (replaces the assignment)."""
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])

    def add(self, starts: Mapping[Key, int]) -> None:
        """Also read these partitions from these offsets (incremental)."""
        self._consumer.incremental_assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])

    def remove(self, keys: Iterable[Key]) -> None:
        """Stop reading these partitions (incremental)."""
        self._consumer.incremental_unassign([TopicPartition(t, p) for t, p in keys])

    def assignment(self) -> list[Key]:
        """The partitions this client reads now."""
        return keys_of(self._consumer.assignment())

    def group_metadata(self) -> object:
        """The group generation's metadata, for offsets sent inside a transaction."""
        return self._consumer.consumer_group_metadata()

    # --- fetching ----------------------------------------------------------------

    def poll(self, max_records: int, timeout: float) -> list[Message]:
        """Up to `max_records` records (errors included), waiting at most `timeout` seconds.

        librdkafka's batch call waits for `max_records` or the whole `timeout`: at low
        load every batch costs `timeout`. `poll_eager` returns at the first record.
        """
        return self._consumer.consume(max_records, timeout)

    def poll_eager(self, max_records: int, timeout: float) -> list[Message]:
        """As `poll`, but returns once one record (or event) arrived, with those already fetched."""
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        if max_records <= 1:
            return [first]
        return [first, *self._consumer.consume(max_records - 1, 0)]

    def pause(self, keys: Iterable[Key]) -> None:
        """Stop fetching these partitions (prefetched records of them are dropped)."""
        partitions = [TopicPartition(t, p) for t, p in keys]
        if partitions:
            self._consumer.pause(partitions)

    def resume(self, keys: Iterable[Key]) -> None:
        """Fetch these partitions again from their current position."""
        partitions = [TopicPartition(t, p) for t, p in keys]
        if partitions:
            self._consumer.resume(partitions)

    def lift(self, keys: Iterable[Key]) -> None:
        """Resume partitions that are leaving or coming back; failures only logged.

        librdkafka keeps a pause across revoke and re-assign: a partition given back
        later would never be fetched again.
        """
        try:
            self.resume(keys)
        except KafkaException as exc:
            log.debug("resume of leaving partitions failed: %s", exc)

    def seek_and_resume(self, key: Key, offset: int) -> bool:
        """Fetch a paused partition again from `offset`; False when librdkafka refuses now.

        Pausing dropped the prefetched records, so the fetch restarts where work stops.
        A refusal (e.g. _STATE right after an assignment) is worth a retry shortly.
        """
        partition = TopicPartition(key[0], key[1], offset)
        try:
            self._consumer.seek(partition)
            self._consumer.resume([partition])
        except KafkaException as exc:
            log.debug("seek of %s[%d] refused (%s); trying again", key[0], key[1], exc)
            return False
        return True

    # --- offsets -------------------------------------------------------------------

    def commit(self, marks: Sequence[Mark], asynchronous: bool) -> list[TopicPartition] | None:
        """Commit these marks; a synchronous commit returns librdkafka's per-partition result.

        Raises KafkaException when the commit cannot be sent or fails as a whole.
        """
        offsets = [mark.partition() for mark in marks]
        if asynchronous:
            self._consumer.commit(offsets=offsets, asynchronous=True)
            return None
        result = self._consumer.commit(offsets=offsets, asynchronous=False)
        return list(result) if result else []

    def committed(self, keys: Iterable[Key], timeout: float = 10.0) -> list[TopicPartition]:
        """The group's committed offsets (with metadata) for these partitions."""
        return list(self._consumer.committed([TopicPartition(t, p) for t, p in keys], timeout))

    # --- metadata -------------------------------------------------------------------

    def partitions_of(self, topic: str, timeout: float = 10.0) -> list[int] | None:
        """The partition numbers of `topic`, or None when it does not exist (or errs)."""
        metadata = self._consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        return sorted(metadata.partitions)

    def topic_names(self, timeout: float = 5.0) -> list[str]:
        """Every topic the cluster lists."""
        return list(self._consumer.list_topics(timeout=timeout).topics)

    def offset_at(self, key: Key, timestamp_ms: int, timeout: float = 10.0) -> int:
        """The first offset of a partition written at or after `timestamp_ms` (-1: none yet)."""
        found = self._consumer.offsets_for_times(
            [TopicPartition(key[0], key[1], timestamp_ms)], timeout=timeout
        )
        return int(found[0].offset) if found else -1

    def watermarks(self, key: Key, timeout: float = 10.0) -> tuple[int, int]:
        """(low, high) offsets of a partition, as the broker reports them."""
        low, high = self._consumer.get_watermark_offsets(TopicPartition(*key), timeout=timeout)
        return int(low), int(high)

    def close(self) -> None:
        """Leave the group at once (instead of after the session timeout) and release."""
        self._consumer.close()


def read_committed_offset(config: KafkaConfig, group: str, key: Key) -> int:
    """The offset `group` committed on one partition (negative when none)."""
    client = Client({**config, "group.id": group})
    try:
        return int(client.committed([key])[0].offset)
    finally:
        client.close()


def by_partition(records: Sequence[Message]) -> tuple[dict[Key, list[Message]], list[KafkaError]]:
    """A fetched batch split per partition (in order), and the errors it carried."""
    batches: dict[Key, list[Message]] = {}
    errors: list[KafkaError] = []
    for record in records:
        error = record.error()
        if error is not None:
            errors.append(error)
            continue
        key = (cast(str, record.topic()), cast(int, record.partition()))
        batch = batches.get(key)
        if batch is None:
            batches[key] = batch = []
        batch.append(record)
    return batches, errors
