"""Reading job outcomes: one consumer per process and results topic, shared by every handle.

A handle asks for a job id and the time it was enqueued. The reader reads only
the partition that id maps to (`partition_of`), from the first offset written at
or after that time (minus a clock-skew margin), outside any consumer group, and
keeps the outcomes it reads in a bounded cache. A later question about an id it
has not seen re-reads the partition from that id's time only when the cache may
have missed it (the partition was read from later, or entries were evicted).

What a record means is the reader's `RecordFormat`: kafka-jobs' own outcomes
(`OutcomeFormat`, the `ResultsReader`), or another keyed format such as the
Celery result backend's (`celery_bridge.backend`), which also deletes keys with
tombstones.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from confluent_kafka import KafkaError, KafkaException, Message

from kafka_jobs.connection.client import Client, Key
from kafka_jobs.results.outcome import Outcome, partition_of
from kafka_jobs.settings import KafkaConfig, config_key

log = logging.getLogger(__name__)

SKEW_MARGIN_MS = 60_000
"""Read this much before a job's enqueue time: worker clocks may be behind the caller's."""
_CACHE = 100_000
_LOOKUP_INTERVAL = 1.0

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Decoded(Generic[E]):
    """One record as its format reads it: the key it is about, and its entry.

    `entry` None is a tombstone: the key is gone (forgotten) from then on.
    """

    key: str
    entry: E | None


class RecordFormat(Protocol[E]):
    """What the records of one results topic mean. Pure: called on the reader's thread."""

    @property
    def name(self) -> str:
        """Tells formats apart in the process's reader registry."""

    def decode(self, message: Message) -> Decoded[E] | None:
        """The record's key and entry; None skips it. Raises `ValueError` when malformed."""

    def ready(self, entry: E) -> bool:
        """True when `entry` is final: `Reader.wait` returns it."""

    def replaces(self, known: E, new: E) -> bool:
        """True when `new`, read after `known` for the same key, takes its place."""

    def partition_key(self, key: str) -> str:
        """The text `partition_of` maps `key` to its partition with (the job id)."""


class OutcomeFormat:
    """kafka-jobs' outcome records: the first final outcome of a job stands."""

    name = "outcome"

    def decode(self, message: Message) -> Decoded[Outcome] | None:
        """The outcome of a record (empty values are skipped)."""
        value = message.value()
        if not value:
            return None
        outcome = Outcome.decode(value)
        return Decoded(outcome.job_id, outcome)

    def ready(self, entry: Outcome) -> bool:
        """Succeeded, failed or dead-lettered."""
        return entry.ready

    def replaces(self, known: Outcome, new: Outcome) -> bool:
        """A re-run (at-least-once) never changes a final outcome."""
        return not known.ready

    def partition_key(self, key: str) -> str:
        """Outcomes are keyed by their job id."""
        return key


class Reader(Generic[E]):
    """Follows the results partitions waiting callers need. Thread-safe.

    The consumer lives on the reader's own thread, started on first use.
    """

    def __init__(self, config: KafkaConfig, topic: str, record_format: RecordFormat[E]) -> None:
        self.topic = topic
        self.format = record_format
        self._config = config
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._outcomes: OrderedDict[str, E] = OrderedDict()
        self._read_from_ms: dict[int, int] = {}  # partition -> read completely since then
        self._horizon_ms = 0  # entries written up to then may have been evicted
        self._fetched: dict[int, int] = {}  # partition -> next offset
        self._partitions = 0
        self._commands: queue.SimpleQueue[Callable[[Client], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failure: BaseException | None = None

    # --- any thread ----------------------------------------------------------------

    def wait(self, job_id: str, since_ms: int, timeout: float | None) -> E | None:
        """The job's final outcome, waiting up to `timeout` (None: no limit); None if none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._need(job_id, since_ms, deadline)
        with self._changed:
            while True:
                outcome = self._outcomes.get(job_id)
                if outcome is not None and self.format.ready(outcome):
                    return outcome
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._changed.wait(1.0 if left is None else min(left, 1.0))

    def current(self, job_id: str, since_ms: int, timeout: float = 10.0) -> E | None:
        """The job's latest outcome after reading its partition to the end (None: none)."""
        deadline = time.monotonic() + timeout
        partition = self._need(job_id, since_ms, deadline)
        if partition is not None:
            caught_up = threading.Event()
            self._commands.put(lambda client: self._sync(client, partition, caught_up))
            caught_up.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return self._outcomes.get(job_id)

    def known(self, key: str) -> E | None:
        """What the reader holds for `key` now, without reading anything (None: nothing)."""
        with self._lock:
            return self._outcomes.get(key)

    def drop(self, key: str) -> None:
        """Forget what the reader holds for `key` (its writer just deleted it)."""
        with self._lock:
            self._outcomes.pop(key, None)

    def partitions(self, timeout: float | None = 10.0) -> int:
        """The topic's partition count, looked up once (0: no such topic within `timeout`)."""
        self._start()
        return self._partition_count(None if timeout is None else time.monotonic() + timeout)

    def close(self) -> None:
        """Stop the reader's thread."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    def _need(self, job_id: str, since_ms: int, deadline: float | None) -> int | None:
        """Make sure the id's partition is read from `since_ms`; its partition (None: no topic)."""
        self._start()
        partitions = self._partition_count(deadline)
        if not partitions:
            return None
        partition = partition_of(self.format.partition_key(job_id), partitions)
        start = since_ms - SKEW_MARGIN_MS
        with self._lock:
            if job_id in self._outcomes:
                return partition
            covered = max(self._read_from_ms.get(partition, 1 << 62), self._horizon_ms)
            if start >= covered:
                return partition
        self._commands.put(lambda client: self._read(client, partition, start))
        return partition

    def _partition_count(self, deadline: float | None) -> int:
        while True:
            with self._lock:
                if self._partitions or self._failure is not None:
                    return self._partitions
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            found = threading.Event()
            self._commands.put(functools.partial(self._look_up, found=found))
            found.wait(_LOOKUP_INTERVAL)
            with self._lock:
                if self._partitions:
                    return self._partitions
            time.sleep(_LOOKUP_INTERVAL / 4)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kafka-jobs-results", daemon=True
                )
                self._thread.start()

    # --- the reader's thread -------------------------------------------------------

    def _run(self) -> None:
        client = Client({**self._config, "enable.partition.eof": True})
        try:
            while not self._stopping.is_set():
                while True:
                    try:
                        self._commands.get_nowait()(client)
                    except queue.Empty:
                        break
                if not client.assignment():
                    self._stopping.wait(0.05)
                    continue
                for message in client.poll_eager(500, 0.1):
                    self._take(message)
        except KafkaException as exc:
            log.error("results reader stopped: %s", exc)
            self._failure = exc
        finally:
            client.close()

    def _look_up(self, client: Client, *, found: threading.Event) -> None:
        partitions = client.partitions_of(self.topic, timeout=5.0)
        if partitions:
            with self._lock:
                self._partitions = len(partitions)
        found.set()

    def _read(self, client: Client, partition: int, start_ms: int) -> None:
        """(Re-)read `partition` from the first record at or after `start_ms`."""
        key: Key = (self.topic, partition)
        with self._lock:
            if start_ms >= self._read_from_ms.get(partition, 1 << 62):
                return  # read from then already (asked twice)
        # The end first: a record written between the two queries is then not skipped.
        end = client.watermarks(key, timeout=10.0)[1]
        offset = client.offset_at(key, max(0, start_ms), timeout=10.0)
        if offset < 0:  # nothing written since then (as of `end`): read from there
            offset = end
        if key in client.assignment():
            client.remove([key])
        client.add({key: offset})
        with self._lock:
            self._read_from_ms[partition] = start_ms
            self._fetched[partition] = offset

    def _sync(self, client: Client, partition: int, done: threading.Event) -> None:
        """Set `done` once `partition` was read up to its end offset now."""
        end = client.watermarks((self.topic, partition), timeout=10.0)[1]
        deadline = time.monotonic() + 10.0
        while self._fetched.get(partition, end) < end and time.monotonic() < deadline:
            for message in client.poll_eager(500, 0.1):
                self._take(message)
        done.set()

    def _take(self, message: Message) -> None:
        error = message.error()
        partition = message.partition() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                with self._lock:
                    self._fetched[partition] = max(
                        self._fetched.get(partition, 0), message.offset() or 0
                    )
            else:
                log.warning("results reader: %s", error)
            return
        decoded = None
        try:
            decoded = self.format.decode(message)
        except ValueError as exc:
            log.warning("results reader: skipping a record (%s)", exc)
        with self._changed:
            self._fetched[partition] = (message.offset() or 0) + 1
            if decoded is None:
                return
            key, outcome = decoded.key, decoded.entry
            if outcome is None:  # a tombstone: the key was forgotten
                self._outcomes.pop(key, None)
                self._changed.notify_all()
                return
            known = self._outcomes.get(key)
            if known is None or self.format.replaces(known, outcome):
                self._outcomes[key] = outcome
                self._outcomes.move_to_end(key)
                if len(self._outcomes) > _CACHE:
                    self._outcomes.popitem(last=False)
                    # Conservative: the evicted entry is older than this record.
                    self._horizon_ms = max(self._horizon_ms, message.timestamp()[1])
            self._changed.notify_all()


class ResultsReader(Reader[Outcome]):
    """The reader of kafka-jobs' own results topic (`OutcomeFormat`)."""

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        super().__init__(config, topic, OutcomeFormat())


_ReaderKey = tuple[tuple[tuple[str, str], ...], str, str]
_readers: dict[_ReaderKey, tuple[int, Reader[Any]]] = {}
# A forked child's copy of its parent's reader has no thread and an unusable client:
# it is left alone (librdkafka objects must not be destroyed in a child), never used.
_inherited: list[Reader[Any]] = []
_readers_lock = threading.Lock()


def _fresh_lock_in_child() -> None:
    # A lock held by another thread at fork stays held in the child: start unlocked.
    global _readers_lock
    _readers_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def _reader_key(config: KafkaConfig, topic: str, name: str) -> _ReaderKey:
    return config_key(config), topic, name


def _shared(config: KafkaConfig, topic: str, name: str, make: Callable[[], Reader[Any]]) -> Any:
    key = _reader_key(config, topic, name)
    with _readers_lock:
        found = _readers.get(key)
        if found is not None and found[0] == os.getpid():
            return found[1]
        if found is not None:
            _inherited.append(found[1])
        reader = make()
        _readers[key] = (os.getpid(), reader)
        return reader


def shared(config: KafkaConfig, topic: str, record_format: RecordFormat[E]) -> Reader[E]:
    """The process's reader of `topic` in `record_format` on the cluster of `config`."""
    made = _shared(config, topic, record_format.name, lambda: Reader(config, topic, record_format))
    return cast(Reader[E], made)


def shared_reader(config: KafkaConfig, topic: str) -> ResultsReader:
    """The process's reader of `topic` on the cluster of `config`."""
    made = _shared(config, topic, OutcomeFormat.name, lambda: ResultsReader(config, topic))
    return cast(ResultsReader, made)


def release_reader(config: KafkaConfig, topic: str, name: str = OutcomeFormat.name) -> None:
    """Stop the process's reader of `topic` on that cluster, if one runs (App.close)."""
    with _readers_lock:
        found = _readers.pop(_reader_key(config, topic, name), None)
    if found is not None and found[0] == os.getpid():
        found[1].close()
