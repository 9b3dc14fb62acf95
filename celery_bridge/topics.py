"""Topic names for queues and exchanges, and creating the topics once per process."""

from __future__ import annotations

import logging
import os
import re
import threading

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from kafka_jobs.connection.admin import TopicCreationFailed, admin_client, create_missing
from kafka_jobs.connection.client import Key
from kafka_jobs.settings import KafkaConfig

log = logging.getLogger(__name__)

# librdkafka clients inherited through fork stay referenced: destroying one in the
# child (no librdkafka threads there) crashes the process.
_inherited: list[AdminClient] = []
_INVALID = re.compile(r"[^a-zA-Z0-9._-]")
_MAX_NAME = 249
_TIMEOUT = 15.0


def topic_name(name: str) -> str:
    """The Kafka topic of a queue or exchange: invalid characters become ``_``."""
    topic = _INVALID.sub("_", name)[:_MAX_NAME]
    return topic if topic not in ("", ".", "..") else f"_{topic}_"


class TopicsUnavailable(ConnectionError):
    """Topics could not be listed or created (the broker is unreachable or refused)."""


class TopicCreator:
    """Creates missing topics, remembering which exist (per process: admin clients do not fork)."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._admin: AdminClient | None = None
        self._pid = 0

    def _client(self) -> AdminClient:
        if self._admin is None or self._pid != os.getpid():
            if self._admin is not None:  # the parent's, in a forked child: never destroy it
                _inherited.append(self._admin)
            self._admin = admin_client(self._config)
            self._pid = os.getpid()
            self._known = set()
        return self._admin

    def ensure(
        self,
        topic: str,
        partitions: int,
        replication_factor: int = -1,
        config: dict[str, str] | None = None,
    ) -> None:
        """Create `topic` with topic `config` unless it exists; `TopicsUnavailable` on failure."""
        if topic in self._known:
            return
        with self._lock:
            if topic in self._known:
                return
            try:
                if create_missing(
                    self._client(), [topic], partitions, replication_factor, _TIMEOUT, config
                ):
                    log.info("created topic %s (%d partitions)", topic, partitions)
            except KafkaException as exc:
                raise TopicsUnavailable(f"cannot list topics: {exc}") from exc
            except TopicCreationFailed as exc:
                raise TopicsUnavailable(str(exc)) from exc
            self._known.add(topic)

    def end_offsets(self, keys: list[Key], timeout: float) -> dict[Key, int]:
        """The end offset of each partition, in one request per broker; raises KafkaException."""
        if not keys:
            return {}
        admin = self._admin
        if admin is None or self._pid != os.getpid():
            with self._lock:
                admin = self._client()
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # unannotated upstream
        asked = {TopicPartition(topic, partition): latest for topic, partition in keys}
        futures = admin.list_offsets(asked, request_timeout=timeout)
        return {
            (tp.topic, tp.partition): int(future.result(timeout).offset)
            for tp, future in futures.items()
        }

    def delete(self, topic: str) -> None:
        """Delete `topic` (best effort: a queue deleted by its client)."""
        with self._lock:
            self._known.discard(topic)
            for future in self._client().delete_topics([topic], request_timeout=_TIMEOUT).values():
                try:
                    future.result(_TIMEOUT)
                except Exception as exc:
                    log.info("could not delete topic %s: %s", topic, exc)
