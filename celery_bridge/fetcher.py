"""A Kafka consumer polled by its own thread, feeding a bounded buffer.

Celery's worker takes messages from the buffer when its prefetch allows and acks
them from any thread, in any order. The polling thread never stops polling (so a
long task cannot trip ``max.poll.interval.ms``); when the buffer is full it pauses
the partitions instead. Acks go into the core worker's lowest-contiguous
`OffsetTracker`, so an offset is never committed past a message not yet acked.

Two kinds:

* grouped (a queue's topics): subscribed under the app's consumer group, offsets
  committed every ``commit_interval`` and synchronously when partitions are revoked
  and at close; buffered records of revoked partitions are dropped;
* reader (broadcast and reply topics): partitions assigned from their end at attach
  time, no group membership and no commits, so every reader sees every record
  published after it attached.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kafka_jobs.worker.offsets import OffsetTracker

log = logging.getLogger(__name__)

Key = tuple[str, int]

_BATCH = 500
_ATTACH_TIMEOUT = 15.0


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"


_fetchers: weakref.WeakSet[Fetcher] = weakref.WeakSet()
# Consumers of the parent, in a forked child (Celery's prefork pool): kept referenced
# there for good, since destroying a librdkafka client after fork crashes the child.
_inherited: list[Consumer] = []


def _keep_after_fork() -> None:
    _inherited.extend(fetcher._consumer for fetcher in list(_fetchers))


os.register_at_fork(after_in_child=_keep_after_fork)


class FetcherFailed(ConnectionError):
    """The consumer hit an error it cannot recover from; the connection must be rebuilt."""


@dataclass(slots=True)
class Record:
    """One fetched record and the assignment generation it was fetched under."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    generation: int
    redelivered: bool = False


class Fetcher:
    """Owns one `Consumer`; every call on it happens on the polling thread."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        grouped: bool,
        wake: Callable[[], None],
        buffer_size: int,
        commit_interval: float = 1.0,
        poll_timeout: float = 0.1,
        name: str = "celery-bridge-fetcher",
    ) -> None:
        self.grouped = grouped
        self._wake = wake
        self._capacity = buffer_size
        self._commit_interval = commit_interval
        self._poll_timeout = poll_timeout
        self._lock = threading.Lock()
        self._buffer: deque[Record] = deque()
        self._trackers: dict[Key, OffsetTracker] = {}
        self._generations: dict[Key, int] = {}
        self._committed: dict[Key, int] = {}
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._topics: set[str] = set()
        self._paused = False
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._consumer = Consumer({**config, "on_commit": self._on_commit})
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _fetchers.add(self)

    # --- any thread --------------------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> None:
        """Consume these topics (grouped); an empty set leaves the group."""
        wanted = set(topics)
        self._call(lambda: self._subscribe(wanted), wait=False)

    def attach(self, topic: str) -> None:
        """Read `topic` from its current end (reader); returns once assigned."""
        self._call(lambda: self._attach(topic), wait=True)

    def detach(self, topic: str) -> None:
        """Stop reading `topic` (reader)."""
        self._call(lambda: self._detach(topic), wait=False)

    def take(self) -> Record | None:
        """The next buffered record, or None."""
        self.raise_failure()
        with self._lock:
            return self._buffer.popleft() if self._buffer else None

    def requeue(self, record: Record) -> None:
        """Deliver `record` again, first (reject with requeue); its offset stays unacked."""
        with self._lock:
            if self._generations.get((record.topic, record.partition), 0) == record.generation:
                record.redelivered = True
                self._buffer.appendleft(record)
        self._wake()

    def ack(self, record: Record) -> None:
        """`record` is done: its offset may be committed once all below it are."""
        if not self.grouped:
            return
        key = (record.topic, record.partition)
        with self._lock:
            # A partition revoked since the fetch belongs to someone else now.
            if self._generations.get(key) == record.generation:
                self._trackers[key].mark_done((record.offset,))

    def ensure_capacity(self, prefetch: int) -> None:
        """Never pause below the channel's prefetch count."""
        self._capacity = max(self._capacity, prefetch)

    def buffered(self) -> int:
        """Records fetched and not yet taken."""
        return len(self._buffer)

    @property
    def paused(self) -> bool:
        """True while the buffer is full and the partitions are paused."""
        return self._paused

    def raise_failure(self) -> None:
        """Raise `FetcherFailed` if the polling thread died."""
        if self._failure is not None:
            raise FetcherFailed(f"Kafka consumer failed: {self._failure}") from self._failure

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is done, leave the group, stop the thread."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the polling thread --------------------------------------------------------

    def _call(self, command: Callable[[], None], wait: bool) -> None:
        self.raise_failure()
        if not wait:
            self._commands.put(command)
            return
        done = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                command()
            except BaseException as exc:  # handed back to the caller
                errors.append(exc)
            finally:
                done.set()

        self._commands.put(run)
        if not done.wait(_ATTACH_TIMEOUT):
            raise FetcherFailed(f"the polling thread did not answer within {_ATTACH_TIMEOUT}s")
        if errors:
            raise errors[0]

    def _run(self) -> None:
        next_commit = time.monotonic() + self._commit_interval
        try:
            while not self._stopping.is_set():
                self._run_commands()
                if not self._topics and not self._consumer.assignment():
                    # Nothing to poll. (After an unsubscribe, polling goes on until the
                    # revocation was served: it commits what is done and leaves cleanly.)
                    time.sleep(self._poll_timeout)
                    continue
                self._fetch()
                self._flow_control()
                if self.grouped and time.monotonic() >= next_commit:
                    self._commit(asynchronous=True)
                    next_commit = time.monotonic() + self._commit_interval
        except BaseException as exc:  # surfaced to the connection by take()
            log.exception("Kafka polling thread failed")
            self._failure = exc
            self._wake()
        finally:
            self._shutdown()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _fetch(self) -> None:
        # Never fetch past the buffer's capacity (one record when full: partitions pause).
        room = max(1, min(_BATCH, self._capacity - len(self._buffer)))
        messages = self._consumer.consume(room, self._poll_timeout)
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka consumer error: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            records.append(
                Record(
                    topic,
                    partition,
                    offset,
                    message.key(),
                    message.value(),
                    message.headers() or [],  # type: ignore[arg-type]  # a list of pairs here
                    0,
                )
            )
        if not records:
            return
        with self._lock:
            for record in records:
                key = (record.topic, record.partition)
                if self.grouped:
                    tracker = self._trackers.get(key)
                    if tracker is None:
                        continue  # revoked in this very poll
                    tracker.register((record.offset,))
                record.generation = self._generations.get(key, 0)
                self._buffer.append(record)
        self._wake()

    def _flow_control(self) -> None:
        size = len(self._buffer)
        if size >= self._capacity:
            # Also covers partitions assigned since the last pause.
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        elif self._paused and size <= self._capacity // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False

    def _commit(
        self, asynchronous: bool, keys: Iterable[Key] | None = None, again: bool = False
    ) -> None:
        """Commit the committable marks; `again`: also marks already sent (they may have failed)."""
        offsets: list[TopicPartition] = []
        with self._lock:
            for key in self._trackers if keys is None else keys:
                tracker = self._trackers.get(key)
                mark = tracker.committable() if tracker is not None else None
                if mark is not None and (again or mark != self._committed.get(key)):
                    self._committed[key] = mark
                    offsets.append(TopicPartition(key[0], key[1], mark))
        if not offsets:
            return
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed (the offsets are committed again later): %s", exc)
            with self._lock:
                for tp in offsets:
                    self._committed.pop((tp.topic, tp.partition), None)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("offset commit failed (committed again later): %s", error)
            with self._lock:
                for tp in partitions:
                    self._committed.pop((tp.topic, tp.partition), None)

    def _subscribe(self, topics: set[str]) -> None:
        if topics == self._topics:
            return
        self._topics = topics
        if topics:
            self._consumer.subscribe(
                sorted(topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        else:
            self._consumer.unsubscribe()

    def _attach(self, topic: str) -> None:
        if topic in self._topics:
            return
        metadata = self._consumer.list_topics(topic, timeout=_ATTACH_TIMEOUT).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise FetcherFailed(f"topic {topic!r} is not available: {metadata and metadata.error}")
        start: list[TopicPartition] = []
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition)
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=_ATTACH_TIMEOUT)
            start.append(TopicPartition(topic, partition, high))
        self._consumer.incremental_assign(start)
        self._topics.add(topic)

    def _detach(self, topic: str) -> None:
        if topic not in self._topics:
            return
        self._topics.discard(topic)
        mine = [tp for tp in self._consumer.assignment() if tp.topic == topic]
        if mine:
            self._consumer.incremental_unassign(mine)
        self._drop({(tp.topic, tp.partition) for tp in mine})

    # --- rebalance callbacks (inside consume(), on the polling thread) --------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _names(partitions))
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._trackers[key] = OffsetTracker()
                self._generations[key] = self._generations.get(key, 0) + 1
                self._committed.pop(key, None)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", _names(partitions))
        keys = {(tp.topic, tp.partition) for tp in partitions}
        # What is done stays done; sent again, as an earlier async commit of the same mark
        # may have failed in this very rebalance.
        self._commit(asynchronous=False, keys=keys, again=True)
        self._drop(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost: %s", _names(partitions))
        # Another member may own them already: commit nothing.
        self._drop({(tp.topic, tp.partition) for tp in partitions})

    def _drop(self, keys: set[Key]) -> None:
        with self._lock:
            for key in keys:
                self._trackers.pop(key, None)
                self._committed.pop(key, None)
                # Acks of messages fetched before now no longer count.
                self._generations[key] = self._generations.get(key, 0) + 1
            self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) not in keys)
        if self._paused and keys:
            # librdkafka keeps a pause across revoke and re-assign.
            try:
                self._consumer.resume([TopicPartition(t, p) for t, p in keys])
            except KafkaException as exc:
                log.debug("resume on revoke failed: %s", exc)

    def _shutdown(self) -> None:
        try:
            if self.grouped and self._failure is None:
                self._commit(asynchronous=False)
            self._consumer.close()
        except Exception as exc:  # closing after a broker failure
            log.warning("closing the Kafka consumer failed: %s", exc)
