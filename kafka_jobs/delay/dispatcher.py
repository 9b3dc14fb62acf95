"""The delay dispatcher: moves delayed jobs down the tier topics and, when due, to their topics.

See `kafka_jobs.delay.tiers` for the design. One thread, one consumer; only that
thread touches it. Every worker sharing a delay-topic prefix joins the group
`<prefix>.dispatcher`, whatever its own group, so each delayed record is
moved by one of them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from confluent_kafka import OFFSET_BEGINNING, Message

from kafka_jobs.connection.client import Client, Key, Mark, by_partition
from kafka_jobs.connection.commits import Committer, connect
from kafka_jobs.connection.pauses import PauseTracker, apply_pause, release, resume_due
from kafka_jobs.delay.tiers import (
    cancel_topic,
    next_hop,
    tier_topic,
    tier_topics,
    with_delay_headers,
    without_delay_headers,
)
from kafka_jobs.errors import DeliveryError, EnqueueError
from kafka_jobs.producer import EnqueuedJob, JobProducer
from kafka_jobs.settings import ClientConfig
from kafka_jobs.wire import H_ETA, H_ID, H_NOT_BEFORE, H_TARGET, Headers, header_map, now_ms

log = logging.getLogger("kafka_jobs.delay")

_FORGET_CANCELLED_AFTER_MS = 3_600_000
_MOVE_RETRY_DELAY_MS = 1_000


class DispatcherSettings(Protocol):
    """What the dispatcher reads of its configuration (`Settings`, the Celery bridge's options)."""

    @property
    def delay_topic_prefix(self) -> str:
        """Prefix of the tier topics, the cancellation topic and the dispatcher group."""

    @property
    def poll_timeout(self) -> float:
        """Seconds one poll may block."""

    @property
    def delivery_timeout(self) -> float:
        """Seconds a move waits for the broker's acknowledgement."""

    def consumer_settings(self, group_id: str) -> ClientConfig:
        """The librdkafka configuration of a consumer in group `group_id`."""


class EventSink(Protocol):
    """Where the dispatcher reports events (an `EventBus`)."""

    # Event payloads are free-form, as in EventBus.emit.
    def emit(self, name: str, **payload: Any) -> None:
        """Report event `name` with its payload."""


class CancelledJobs:
    """Job ids cancelled through `<prefix>.cancelled`, read from its beginning (own consumer)."""

    def __init__(self, settings: DispatcherSettings) -> None:
        topic = cancel_topic(settings.delay_topic_prefix)
        config = settings.consumer_settings(f"kafka-jobs-cancel-reader-{uuid.uuid4().hex}")
        self._client = Client(config)
        partitions = self._client.partitions_of(topic) or [0]
        self._client.assign({(topic, p): OFFSET_BEGINNING for p in partitions})
        self._due: dict[str, int] = {}
        # Before releasing anything, read what was cancelled while no dispatcher ran.
        deadline = time.monotonic() + 10
        while self._read(0.5) and time.monotonic() < deadline:
            pass

    def _read(self, timeout: float) -> int:
        records = self._client.poll(500, timeout)
        for record in records:
            key, value = record.key(), record.value()
            if record.error() is None and key and value:
                try:
                    self._due[key.decode()] = int(value)
                except ValueError:
                    log.warning("ignoring malformed cancellation %r", value)
        return len(records)

    def refresh(self) -> None:
        """Read new cancellations; forget those long past their due time."""
        for _ in range(20):  # drain a backlog, bounded
            if self._read(0) < 500:
                break
        horizon = now_ms() - _FORGET_CANCELLED_AFTER_MS
        if len(self._due) > 10_000:
            self._due = {job: due for job, due in self._due.items() if due > horizon}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._due

    def close(self) -> None:
        """Release the consumer."""
        self._client.close()


class DelayDispatcher:
    """Moves due records out of the delay tiers. Listener-style: one thread owns the consumer.

    `producer` writes the moves; `events` gets ``job.cancelled`` and ``worker.error``.
    A kafka-jobs worker passes its app's settings, producer and event bus; the Celery
    bridge its transport options and producer.
    """

    def __init__(
        self,
        settings: DispatcherSettings,
        producer: JobProducer,
        events: EventSink,
        stopping: threading.Event,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.events = events
        self.stopping = stopping
        self.on_crash = on_crash
        self.prefix = settings.delay_topic_prefix
        self.group_id = f"{self.prefix}.dispatcher"
        self._client: Client | None = None
        self._committer = Committer(self.group_id)
        self._waiting = PauseTracker()  # in epoch milliseconds
        self._settled: dict[Key, int] = {}  # partition -> next offset to commit
        self._owned: set[Key] = set()
        self.thread = threading.Thread(target=self._run, name="kafka-jobs-delay", daemon=True)

    @property
    def client(self) -> Client:
        """The dispatcher's group client (its thread only)."""
        assert self._client is not None, "dispatcher not started"
        return self._client

    def start(self) -> None:
        """Start the dispatcher thread."""
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end after `stopping` was set."""
        self.thread.join(timeout)

    def _run(self) -> None:
        cancelled: CancelledJobs | None = None
        try:
            config = self.settings.consumer_settings(self.group_id)
            # A resumed tier partition is fetched when the current fetch returns: keep
            # that wait short so a due job is not held back by librdkafka's 500 ms default.
            config.setdefault("fetch.wait.max.ms", 100)
            self._client = connect(config, self._committer)
            self.client.subscribe(tier_topics(self.prefix), self)
            cancelled = CancelledJobs(self.settings)
            while not self.stopping.is_set():
                resume_due(self.client, self._waiting, now_ms(), self._owned, retry_after=100)
                cancelled.refresh()
                records = self.client.poll(500, self.settings.poll_timeout)
                if records:
                    self._dispatch(records, cancelled)
            self._commit(asynchronous=False)
        except BaseException as error:
            log.exception("delay dispatcher crashed")
            self.events.emit("worker.error", where="delay-dispatcher", error=error)
            self.on_crash(error)
        finally:
            if cancelled is not None:
                cancelled.close()
            if self._client is not None:
                self._client.close()

    def _dispatch(self, records: Sequence[Message], cancelled: CancelledJobs) -> None:
        moves: list[tuple[Key, int, EnqueuedJob | None]] = []
        for key, batch in by_partition(records)[0].items():
            if key in self._waiting:
                continue  # fetched before the pause took effect; fetched again on resume
            for record in batch:
                offset = cast(int, record.offset())
                wait_until, handle = self._move(record, cancelled)
                if wait_until is not None:
                    self._wait(key, wait_until, offset)
                    break
                moves.append((key, offset, handle))
        self._settle(moves)
        self._commit(asynchronous=True)

    def _move(
        self, record: Message, cancelled: CancelledJobs
    ) -> tuple[int | None, EnqueuedJob | None]:
        """Move one record on, or say until when it must wait. Returns (wait until, write)."""
        raw = cast(Headers, record.headers() or [])
        headers = header_map(raw)
        try:
            eta = int(headers[H_ETA] or b"")
            not_before = int(headers[H_NOT_BEFORE] or b"")
            target = (headers[H_TARGET] or b"").decode()
        except (KeyError, ValueError, UnicodeDecodeError):
            log.error("dropping a malformed delayed record at %s", _where(record))
            return None, None
        job_id = (headers.get(H_ID) or b"").decode(errors="replace")
        if job_id in cancelled:
            log.info("delayed job %s was cancelled", job_id)
            self.events.emit("job.cancelled", job_id=job_id, topic=target)
            return None, None
        now = now_ms()
        if now < not_before:
            return not_before, None
        hop = next_hop(now, eta)
        producer = self.producer
        # Records without a job id (Celery messages) are told apart by where they are.
        ident = job_id or _where(record)
        try:
            if hop is None:
                handle = producer.enqueue(
                    target, ident, record.value(), record.key(), without_delay_headers(raw)
                )
            else:
                seconds, next_not_before = hop
                hop_headers = with_delay_headers(raw, eta, target, next_not_before)
                topic = tier_topic(self.prefix, seconds)
                handle = producer.enqueue(topic, ident, record.value(), record.key(), hop_headers)
        except EnqueueError as error:
            log.error("cannot move delayed job %s: %s", job_id, error)
            return now + _MOVE_RETRY_DELAY_MS, None
        return None, handle

    def _settle(self, moves: list[tuple[Key, int, EnqueuedJob | None]]) -> None:
        """Wait for the moves' acknowledgements; settle offsets up to the first failure."""
        failed: set[Key] = set()
        for key, offset, handle in moves:
            if key in failed:
                continue
            if handle is not None:
                try:
                    handle.wait(self.settings.delivery_timeout)
                except DeliveryError as error:
                    log.error("moving a delayed job failed, retrying: %s", error)
                    failed.add(key)
                    self._wait(key, now_ms() + _MOVE_RETRY_DELAY_MS, offset)
                    continue
            self._settled[key] = offset + 1

    def _wait(self, key: Key, until_ms: int, offset: int) -> None:
        apply_pause(self.client, self._waiting, key, until_ms, offset)

    def _commit(self, asynchronous: bool) -> None:
        marks = [Mark(key, offset) for key, offset in self._settled.items()]
        if marks and self._committer.commit(marks, asynchronous) is not None:
            self._settled.clear()

    # --- rebalance (inside poll(), on the dispatcher thread) ---------------------

    def assigned(self, keys: list[Key]) -> None:
        """Tier partitions are ours: nothing to restore (the records carry their times)."""
        self._owned.update(keys)
        self._committer.forget(keys)

    def revoked(self, keys: list[Key]) -> None:
        """Tier partitions leave: commit what was moved on."""
        self._commit(asynchronous=False)
        self._forget(keys)

    def lost(self, keys: list[Key]) -> None:
        """Tier partitions taken away: commit nothing."""
        self._forget(keys)

    def _forget(self, keys: list[Key]) -> None:
        self._owned.difference_update(keys)
        release(self.client, self._waiting, keys)
        for key in keys:
            self._settled.pop(key, None)
        self._committer.forget(keys)


def _where(record: Message) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"
