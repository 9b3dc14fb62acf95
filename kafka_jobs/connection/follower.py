"""Following a small (compacted) topic: every record from its beginning, on its own thread.

Control state that every process must see (purge marks today) lives in a compacted
topic. A `Follower` reads all of the topic's partitions from the beginning outside
any consumer group, hands each record to a callback, and keeps following. A topic
that does not exist yet is looked up again until it does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message

from kafka_jobs.connection.client import Client, Key
from kafka_jobs.settings import KafkaConfig

log = logging.getLogger(__name__)

_LOOKUP_INTERVAL = 2.0  # a missing topic is looked up again this often


class Follower:
    """Reads `topic` from its beginning and follows it; `on_record` gets every record.

    `on_record` runs on the follower's thread. `wait_loaded` returns once the records
    the topic held when the follower started have all been handed over.
    """

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        on_record: Callable[[Message], None],
        *,
        name: str,
        poll_timeout: float = 0.1,
    ) -> None:
        self.topic = topic
        self._config = config
        self._on_record = on_record
        self._poll_timeout = poll_timeout
        self._loaded = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float) -> bool:
        """True once everything the topic held at start was read (False on timeout)."""
        return self._loaded.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop following."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the follower's thread ------------------------------------------------------

    def _run(self) -> None:
        # Partition EOF events tell when a partition was read to its end, even when
        # its last offsets hold no record (transaction markers, compaction).
        client = Client({**self._config, "enable.partition.eof": True})  # on this thread only
        try:
            pending = self._assign(client)
            while not self._stopping.is_set():
                if pending is None:  # the topic does not exist yet: nothing to load
                    self._loaded.set()
                    self._stopping.wait(_LOOKUP_INTERVAL)
                    pending = self._assign(client)
                    continue
                for message in client.poll_eager(500, self._poll_timeout):
                    error = message.error()
                    key = (self.topic, message.partition() or 0)
                    if error is None:
                        self._hand_over(message)
                        if (message.offset() or 0) + 1 >= pending.get(key, 0):
                            pending.pop(key, None)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        pending.pop(key, None)
                    else:
                        log.warning("following %s: %s", self.topic, error)
                if not pending:
                    self._loaded.set()
        except KafkaException as exc:
            log.error("following %s stopped: %s", self.topic, exc)
        finally:
            self._loaded.set()  # waiters go on with what was read
            client.close()

    def _assign(self, client: Client) -> dict[Key, int] | None:
        """Read every partition from its beginning; the ends still to reach (None: no topic)."""
        try:
            partitions = client.partitions_of(self.topic, timeout=5.0)
        except KafkaException as exc:
            log.info("cannot look up %s yet: %s", self.topic, exc)
            return None
        if partitions is None:
            return None
        pending: dict[Key, int] = {}
        for partition in partitions:
            key = (self.topic, partition)
            low, high = client.watermarks(key, timeout=5.0)
            if high > low:
                pending[key] = high
        client.assign({(self.topic, p): OFFSET_BEGINNING for p in partitions})
        return pending

    def _hand_over(self, message: Message) -> None:
        try:
            self._on_record(message)
        except Exception:  # one bad record must not stop the follower
            log.exception("following %s: a record could not be handled", self.topic)
