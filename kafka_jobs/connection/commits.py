"""The commit path: send marks, remember what the group holds, forget what failed.

Shared by the worker's listener, the delay dispatcher and the Celery bridge's
fetcher. Asynchronous commits skip marks already sent; synchronous ones (on
revocation and shutdown) send everything again, since an earlier asynchronous
commit of the same mark may still fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from kafka_jobs.connection.client import Client, Key, Mark
from kafka_jobs.settings import KafkaConfig

log = logging.getLogger("kafka_jobs.connection")


class Committer:
    """Commits marks through one client and keeps what was committed. Owner thread only.

    `on_committed` hears every partition the broker accepted. `handle_result` must be
    the client's `on_commit` callback (it reports asynchronous outcomes).
    """

    def __init__(
        self,
        name: str,
        on_committed: Callable[[list[TopicPartition]], None] | None = None,
    ) -> None:
        self.name = name
        self.client: Client | None = None
        self._on_committed = on_committed
        self._sent: dict[Key, tuple[int, str]] = {}
        # Whether the broker gives back commit metadata: None until a commit carried some.
        self.metadata_supported: bool | None = None
        self._probe: Key | None = None

    def commit(self, marks: Sequence[Mark], asynchronous: bool) -> list[Mark] | None:
        """Send the marks (async: only those that changed); the marks sent, None on failure.

        A failure is not fatal: the offsets stay uncommitted and the records may run again.
        """
        if asynchronous:
            marks = [m for m in marks if self._sent.get(m.key) != (m.offset, m.metadata)]
        if not marks:
            return []
        assert self.client is not None, "committer not attached to a client"
        try:
            result = self.client.commit(marks, asynchronous)
        except KafkaException as exc:
            log.warning("offset commit failed for %s: %s", self.name, exc)
            self.forget(m.key for m in marks)
            return None
        if result is None:  # optimistic; handle_result forgets failures
            for mark in marks:
                self._sent[mark.key] = (mark.offset, mark.metadata)
        else:
            self.handle_result(None, result)
        return list(marks)

    def handle_result(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Librdkafka's commit outcome (inside poll(), or a synchronous commit's result)."""
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return
        accepted = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if error is not None or tp.error is not None:
                log.warning("offset commit of %s[%d] failed: %s", *key, error or tp.error)
                if self._sent.get(key, (None,))[0] == tp.offset:
                    del self._sent[key]  # so the next round sends it again
                continue
            self._sent[key] = (tp.offset, tp.metadata or "")
            if tp.metadata and self.metadata_supported is None:
                self._probe = key
            accepted.append(tp)
        if accepted and self._on_committed is not None:
            self._on_committed(accepted)

    def committed(self, key: Key) -> int | None:
        """The last offset sent (and not known to have failed) for `key`."""
        sent = self._sent.get(key)
        return sent[0] if sent is not None else None

    def forget(self, keys: Iterable[Key]) -> None:
        """Forget what was sent for these partitions (revoked, reassigned or failed)."""
        for key in keys:
            self._sent.pop(key, None)

    def clear(self) -> None:
        """Forget everything (the connection is rebuilt)."""
        self._sent.clear()

    def probe_metadata(self) -> None:
        """Once, after a commit carried metadata: read it back to learn if the broker keeps it."""
        key, self._probe = self._probe, None
        if key is None or self.metadata_supported is not None or self.client is None:
            return
        try:
            stored = self.client.committed([key])
        except KafkaException as exc:
            log.warning("could not read back committed offsets: %s", exc)
            return
        self.metadata_supported = bool(stored and stored[0].metadata)
        if not self.metadata_supported:
            log.warning(
                "the broker does not return offset-commit metadata: after a restart or"
                " rebalance, records finished above the committed offset run again"
                " (plain lowest-contiguous commits)"
            )


def connect(
    config: KafkaConfig,
    committer: Committer,
    on_stats: Callable[[str], None] | None = None,
) -> Client:
    """A client whose commit outcomes reach `committer`."""
    client = Client(config, on_commit=committer.handle_result, on_stats=on_stats)
    committer.client = client
    return client
