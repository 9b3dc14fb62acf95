"""A Kafka consumer polled by its own thread, feeding a bounded buffer.

Celery's worker takes messages from the buffer when its prefetch allows and acks
them from any thread, in any order. The polling thread never stops polling (so a
long task cannot trip ``max.poll.interval.ms``); when the buffer is full it pauses
the partitions instead. Acks go into the core worker's lowest-contiguous
`OffsetTracker`, so an offset is never committed past a message not yet acked.

Two kinds: grouped (a queue's topics; the app's consumer group, offsets committed
every ``commit_interval`` and synchronously on revocation and at close) and reader
(broadcast and reply topics; assigned from their end at attach time, no group and
no commits, so every reader sees every record published after it attached).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message

from celery_bridge.fetched import EndOffsets, FetcherFailed, Record, keep_after_fork, names, purged
from kafka_jobs.connection.client import Key, Mark, by_partition
from kafka_jobs.connection.commits import Committer, connect
from kafka_jobs.processing.offsets import OffsetTracker
from kafka_jobs.settings import KafkaConfig

log = logging.getLogger(__name__)

_BATCH = 500
_EOF = KafkaError._PARTITION_EOF
_ATTACH_TIMEOUT = 15.0
# How long a queue batch waits for the broadcasts sent before it (a lagging reader).
_CATCH_UP_TIMEOUT = 1.0
_CATCH_UP_BACKOFF = 10.0
# How long the first batch waits for the purge marks to be read (see `gate`).
_GATE_TIMEOUT = 10.0


class Fetcher:
    """Owns one `Consumer`; every call on it happens on the polling thread."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        grouped: bool,
        wake: Callable[[], None],
        buffer_size: int,
        commit_interval: float = 1.0,
        poll_timeout: float = 0.1,
        name: str = "celery-bridge-fetcher",
        end_offsets: EndOffsets | None = None,
    ) -> None:
        self.grouped = grouped
        self._wake = wake
        self._capacity = buffer_size
        self._commit_interval = commit_interval
        self._poll_timeout = poll_timeout
        self._lock = threading.Lock()
        # A reader's next offset per partition; waiters of catch_up() wake on each fetch.
        self._positions: dict[Key, int] = {}
        # Grouped: the offset fetched up to per partition (records and end-of-partition
        # events); waiters of settle() wake on each fetch.
        self._fetched: dict[Key, int] = {}
        self._advanced = threading.Condition(self._lock)
        self._broadcasts: tuple[Fetcher, ...] = ()  # replaced whole: read by the poll thread
        self._catch_up_off_until = 0.0
        # Asked on another connection than this consumer's: a broker answers a
        # connection's requests in order, so a query sent here would wait behind the
        # fetch it holds open (up to fetch.wait.max.ms, 500 ms by default).
        self._end_offsets: EndOffsets = end_offsets or self._watermarks
        # Purged partitions: records below the end offset, written before the purge.
        self._purges: dict[Key, tuple[int, int]] = {}
        self._gate: Callable[[float], bool] | None = None
        self._buffer: deque[Record] = deque()
        self._trackers: dict[Key, OffsetTracker] = {}
        self._generations: dict[Key, int] = {}
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._topics: set[str] = set()
        self._attached: set[str] = set()  # the callers' view of `_topics`, for attach()
        self._paused = False
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._committer = Committer(name)
        self.client = connect(config, self._committer)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        keep_after_fork(self)

    # --- any thread --------------------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> None:
        """Consume these topics (grouped); an empty set leaves the group."""
        wanted = set(topics)
        self._call(lambda: self._subscribe(wanted), wait=False)

    def attach(self, topic: str) -> None:
        """Read `topic` from its current end (reader); returns once assigned."""
        with self._lock:
            if topic in self._attached:  # no round trip to the polling thread
                return
        self._call(lambda: self._attach(topic), wait=True)
        with self._lock:
            self._attached.add(topic)

    def detach(self, topic: str) -> None:
        """Stop reading `topic` (reader)."""
        with self._lock:
            self._attached.discard(topic)
        self._call(lambda: self._detach(topic), wait=False)

    def follow(self, broadcasts: Fetcher) -> None:
        """Buffer no queue record before `broadcasts` has read what was sent before it.

        A remote-control command sent before a task (``revoke`` by id or by stamped
        headers, then ``apply_async``) then reaches the worker before that task, as
        on brokers with one connection for both. Bounded: see `catch_up`.
        """
        self._broadcasts = (*self._broadcasts, broadcasts)

    def unfollow(self, broadcasts: Fetcher) -> None:
        """Stop waiting for `broadcasts` (closed with its channel)."""
        self._broadcasts = tuple(f for f in self._broadcasts if f is not broadcasts)

    def gate(self, ready: Callable[[float], bool]) -> None:
        """Buffer nothing before `ready(timeout)` returned (once: the purge marks are read)."""
        self._gate = ready

    def purge(self, key: Key, end: int, at_ms: int) -> None:
        """Skip `key`'s records below `end` written up to `at_ms`: done, never delivered.

        Records already buffered are dropped now; those fetched later are skipped
        when fetched. Records already taken (handed to Celery) are not recalled.
        """
        with self._lock:
            if self._purges.get(key, (-1, 0))[0] >= end:
                return
            self._purges[key] = (end, at_ms)
            tracker = self._trackers.get(key)
            kept: deque[Record] = deque()
            for record in self._buffer:
                if (record.topic, record.partition) == key and purged(record, end, at_ms):
                    if tracker is not None:
                        tracker.mark_done((record.offset,))
                else:
                    kept.append(record)
            self._buffer = kept

    def catch_up(self, end_offsets: EndOffsets, timeout: float = _CATCH_UP_TIMEOUT) -> bool:
        """Wait until this reader fetched every record its partitions hold now.

        `end_offsets` (the caller's, called on its thread) asks the broker for them.
        False when `timeout` passed first (the caller goes on regardless).
        """
        with self._lock:
            keys = list(self._positions)
        if not keys:
            return True
        ends = end_offsets(keys, timeout)
        deadline = time.monotonic() + timeout
        with self._advanced:
            while any(self._positions.get(key, end) < end for key, end in ends.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._advanced.wait(left)
        return True

    def settle(self, ends: dict[Key, int], timeout: float) -> bool:
        """Wait until this (grouped) fetcher fetched up to `ends` on its assigned partitions.

        Partitions not assigned here (any more) are left out. False when `timeout`
        passed first, e.g. while the buffer is full and the partitions are paused.
        """
        deadline = time.monotonic() + timeout
        with self._advanced:
            while any(
                key in self._trackers and self._fetched.get(key, -1) < end
                for key, end in ends.items()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._advanced.wait(left)
        return True

    def assigned_partitions(self) -> list[Key]:
        """The partitions assigned to this (grouped) fetcher now."""
        with self._lock:
            return list(self._trackers)

    def _watermarks(self, keys: list[Key], timeout: float) -> dict[Key, int]:
        return {key: self.client.watermarks(key, timeout)[1] for key in keys}

    def take(self) -> Record | None:
        """The next buffered record, or None."""
        self.raise_failure()
        with self._lock:
            return self._buffer.popleft() if self._buffer else None

    def take_first(self, wanted: Callable[[Record], bool]) -> Record | None:
        """The first buffered record `wanted` accepts (out of turn), or None."""
        self.raise_failure()
        with self._lock:
            for index, record in enumerate(self._buffer):
                if wanted(record):
                    del self._buffer[index]
                    return record
        return None

    def requeue(self, record: Record) -> None:
        """Deliver `record` again, first (reject with requeue); its offset stays unacked."""
        with self._lock:
            if self._generations.get((record.topic, record.partition), 0) == record.generation:
                record.redelivered = True
                self._buffer.appendleft(record)
        self._wake()

    def owns(self, record: Record) -> bool:
        """True while `record`'s partition is still assigned as when it was fetched."""
        with self._lock:
            return self._generations.get((record.topic, record.partition)) == record.generation

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
                if not self._topics and not self.client.assignment():
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
        # A reader is eager: a remote-control command or reply goes on at once, not
        # after the poll timeout (librdkafka's batch call waits for a full batch or the
        # timeout). Queue consumers keep the batch call: with the single-record poll,
        # catch_up's end-offset queries on the same client timed out on Apache Kafka.
        poll = self.client.poll if self.grouped else self.client.poll_eager
        polled = poll(room, self._poll_timeout)
        self._note_ends(polled)
        batches, errors = by_partition(polled)
        for error in errors:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("Kafka consumer error: %s", error)
        if not batches:
            return
        self._wait_for_broadcasts()
        if self._gate is not None:
            if not self._gate(_GATE_TIMEOUT):
                log.warning("purge marks not read within %ss; going on", _GATE_TIMEOUT)
            self._gate = None
        with self._lock:
            for key, messages in batches.items():
                tracker = self._trackers.get(key)
                if self.grouped and tracker is None:
                    continue  # revoked in this very poll
                generation = self._generations.get(key, 0)
                records = [
                    Record(
                        key[0],
                        key[1],
                        cast(int, message.offset()),
                        message.key(),
                        message.value(),
                        message.headers() or [],  # type: ignore[arg-type]  # a list of pairs here
                        generation,
                        timestamp_ms=message.timestamp()[1],
                    )
                    for message in messages
                ]
                if tracker is not None:
                    self._fetched[key] = records[-1].offset + 1
                    tracker.register(record.offset for record in records)
                    purge = self._purges.get(key)
                    if purge is not None:
                        tracker.mark_done(r.offset for r in records if purged(r, *purge))
                        records = [r for r in records if not purged(r, *purge)]
                elif key in self._positions:
                    self._positions[key] = records[-1].offset + 1
                self._buffer.extend(records)
            self._advanced.notify_all()
        self._wake()

    def _note_ends(self, polled: list[Message]) -> None:
        # End-of-partition events (enable.partition.eof) say how far a partition with
        # nothing new was fetched: settle() needs it for partitions with no records.
        if not self.grouped:
            return
        ends = [m for m in polled if (e := m.error()) is not None and e.code() == _EOF]
        if not ends:
            return
        with self._lock:
            for event in ends:
                key = (cast(str, event.topic()), cast(int, event.partition()))
                if key in self._trackers:
                    self._fetched[key] = max(self._fetched.get(key, -1), cast(int, event.offset()))
            self._advanced.notify_all()

    def _wait_for_broadcasts(self) -> None:
        # Best effort: ordering must never stop the queue. A failed end-offset query
        # turns the wait off for a while, so a broker that cannot answer costs one
        # timeout per _CATCH_UP_BACKOFF, not one per batch.
        if not self._broadcasts or time.monotonic() < self._catch_up_off_until:
            return
        for broadcasts in self._broadcasts:
            try:
                if not broadcasts.catch_up(self._end_offsets):
                    log.debug("broadcasts not caught up in %ss; going on", _CATCH_UP_TIMEOUT)
            except KafkaException as exc:
                log.warning("cannot read the broadcasts' end offsets (%s); going on", exc)
                self._catch_up_off_until = time.monotonic() + _CATCH_UP_BACKOFF
                return

    def _flow_control(self) -> None:
        size = len(self._buffer)
        if size >= self._capacity:
            # Also covers partitions assigned since the last pause.
            self.client.pause(self.client.assignment())
            self._paused = True
        elif self._paused and size <= self._capacity // 2:
            self.client.resume(self.client.assignment())
            self._paused = False

    def _commit(self, asynchronous: bool, keys: Iterable[Key] | None = None) -> None:
        """Commit the committable marks (sync: all of them again, as one sent may have failed)."""
        marks: list[Mark] = []
        with self._lock:
            for key in self._trackers if keys is None else keys:
                tracker = self._trackers.get(key)
                mark = tracker.committable() if tracker is not None else None
                if mark is not None:
                    marks.append(Mark(key, mark))
        self._committer.commit(marks, asynchronous)

    def _subscribe(self, topics: set[str]) -> None:
        if topics == self._topics:
            return
        self._topics = topics
        self.client.subscribe(sorted(topics), self)

    def _attach(self, topic: str) -> None:
        if topic in self._topics:
            return
        partitions = self.client.partitions_of(topic, timeout=_ATTACH_TIMEOUT)
        if partitions is None:
            raise FetcherFailed(f"topic {topic!r} is not available")
        starts = {
            (topic, p): self.client.watermarks((topic, p), _ATTACH_TIMEOUT)[1] for p in partitions
        }
        self.client.add(starts)
        with self._lock:
            self._positions.update(starts)
        self._topics.add(topic)

    def _detach(self, topic: str) -> None:
        if topic not in self._topics:
            return
        self._topics.discard(topic)
        mine = [key for key in self.client.assignment() if key[0] == topic]
        if mine:
            self.client.remove(mine)
        self._drop(set(mine))
        with self._lock:
            for key in mine:
                self._positions.pop(key, None)
            self._advanced.notify_all()

    # --- rebalance (inside poll(), on the polling thread) ----------------------------

    def assigned(self, keys: list[Key]) -> None:
        """New partitions: fresh offset trackers, a new generation for their records."""
        log.info("partitions assigned: %s", names(keys))
        self._committer.forget(keys)
        with self._lock:
            for key in keys:
                self._trackers[key] = OffsetTracker()
                self._fetched.pop(key, None)
                self._generations[key] = self._generations.get(key, 0) + 1

    def revoked(self, keys: list[Key]) -> None:
        """Partitions leave: commit what is acked, drop what is buffered."""
        log.info("partitions revoked: %s", names(keys))
        self._commit(asynchronous=False, keys=keys)
        self._drop(set(keys))

    def lost(self, keys: list[Key]) -> None:
        """Partitions taken away: another member may own them already, so commit nothing."""
        log.warning("partitions lost: %s", names(keys))
        self._drop(set(keys))

    def _drop(self, keys: set[Key]) -> None:
        with self._lock:
            for key in keys:
                self._trackers.pop(key, None)
                self._fetched.pop(key, None)
                # Acks of messages fetched before now no longer count.
                self._generations[key] = self._generations.get(key, 0) + 1
            self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) not in keys)
        self._committer.forget(keys)
        if self._paused and keys:
            self.client.lift(keys)  # librdkafka keeps a pause across revoke and re-assign

    def _shutdown(self) -> None:
        try:
            if self.grouped and self._failure is None:
                self._commit(asynchronous=False)
            self.client.close()
        except Exception as exc:  # closing after a broker failure
            log.warning("closing the Kafka consumer failed: %s", exc)
