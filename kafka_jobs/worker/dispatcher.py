"""The delay dispatcher: moves delayed jobs down the tier topics and, when due, to their topics.

See `kafka_jobs.delay` for the design. One thread, one consumer; only that
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
from typing import TYPE_CHECKING, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from kafka_jobs.delay import (
    cancel_topic,
    next_hop,
    tier_topic,
    tier_topics,
    with_delay_headers,
    without_delay_headers,
)
from kafka_jobs.errors import DeliveryError, EnqueueError
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.wire import H_ETA, H_ID, H_NOT_BEFORE, H_TARGET, Headers, header_map, now_ms

if TYPE_CHECKING:
    from kafka_jobs.app import App

log = logging.getLogger("kafka_jobs.delay")

Key = tuple[str, int]
_FORGET_CANCELLED_AFTER_MS = 3_600_000
_MOVE_RETRY_DELAY_MS = 1_000


class CancelledJobs:
    """Job ids cancelled through `<prefix>.cancelled`, read from its beginning (own consumer)."""

    def __init__(self, app: App) -> None:
        topic = cancel_topic(app.settings.delay_topic_prefix)
        config = app.settings.consumer_settings(f"kafka-jobs-cancel-reader-{uuid.uuid4().hex}")
        self._consumer = Consumer(config)
        metadata = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        partitions = list(metadata.partitions) if metadata and metadata.error is None else [0]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._due: dict[str, int] = {}
        # Before releasing anything, read what was cancelled while no dispatcher ran.
        deadline = time.monotonic() + 10
        while self._read(0.5) and time.monotonic() < deadline:
            pass

    def _read(self, timeout: float) -> int:
        records = self._consumer.consume(500, timeout)
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
        self._consumer.close()


class DelayDispatcher:
    """Moves due records out of the delay tiers. Listener-style: one thread owns the consumer."""

    def __init__(
        self,
        app: App,
        stopping: threading.Event,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.stopping = stopping
        self.on_crash = on_crash
        self.prefix = app.settings.delay_topic_prefix
        self.group_id = f"{self.prefix}.dispatcher"
        self._consumer: Consumer | None = None
        self._waiting: dict[Key, tuple[int, int]] = {}  # partition -> (resume at ms, offset)
        self._settled: dict[Key, int] = {}  # partition -> next offset to commit
        self.thread = threading.Thread(target=self._run, name="kafka-jobs-delay", daemon=True)

    @property
    def consumer(self) -> Consumer:
        """The dispatcher's consumer (its thread only)."""
        assert self._consumer is not None, "dispatcher not started"
        return self._consumer

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
            self._consumer = Consumer(config)
            self.consumer.subscribe(
                tier_topics(self.prefix), on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            cancelled = CancelledJobs(self.app)
            while not self.stopping.is_set():
                self._resume_due()
                cancelled.refresh()
                records = self.consumer.consume(500, self.settings.poll_timeout)
                if records:
                    self._dispatch(records, cancelled)
            self._commit(asynchronous=False)
        except BaseException as error:
            log.exception("delay dispatcher crashed")
            self.app.events.emit("worker.error", where="delay-dispatcher", error=error)
            self.on_crash(error)
        finally:
            if cancelled is not None:
                cancelled.close()
            if self._consumer is not None:
                self._consumer.close()

    def _dispatch(self, records: Sequence[Message], cancelled: CancelledJobs) -> None:
        moves: list[tuple[Key, int, EnqueuedJob | None]] = []
        for key, batch in _by_partition(records).items():
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
            self.app.events.emit("job.cancelled", job_id=job_id, topic=target)
            return None, None
        now = now_ms()
        if now < not_before:
            return not_before, None
        hop = next_hop(now, eta)
        producer = self.app.producer
        try:
            if hop is None:
                handle = producer.enqueue(
                    target, job_id, record.value(), record.key(), without_delay_headers(raw)
                )
            else:
                seconds, next_not_before = hop
                hop_headers = with_delay_headers(raw, eta, target, next_not_before)
                topic = tier_topic(self.prefix, seconds)
                handle = producer.enqueue(topic, job_id, record.value(), record.key(), hop_headers)
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
        self.consumer.pause([TopicPartition(*key)])
        self._waiting[key] = (until_ms, offset)

    def _resume_due(self) -> None:
        now = now_ms()
        for key, (until, offset) in list(self._waiting.items()):
            if until <= now:
                del self._waiting[key]
                partition = TopicPartition(key[0], key[1], offset)
                try:
                    self.consumer.seek(partition)  # pausing dropped what was prefetched
                    self.consumer.resume([partition])
                except KafkaException as exc:  # e.g. _STATE just after an assignment
                    log.debug("seek of %s[%d] refused (%s); trying again", *key, exc)
                    self._waiting[key] = (now + 100, offset)

    def _commit(self, asynchronous: bool) -> None:
        if not self._settled:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._settled.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            log.warning("delay dispatcher commit failed: %s", error)
            return
        self._settled.clear()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(asynchronous=False)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if self._waiting.pop((tp.topic, tp.partition), None) is not None:
                # A pause survives revoke and re-assign in librdkafka: lift it, or the
                # tier partition would never be fetched again when it comes back.
                try:
                    self.consumer.resume([TopicPartition(tp.topic, tp.partition)])
                except KafkaException as exc:
                    log.debug("resume on revoke failed: %s", exc)
            self._settled.pop((tp.topic, tp.partition), None)


def _by_partition(records: Sequence[Message]) -> dict[Key, list[Message]]:
    batches: dict[Key, list[Message]] = {}
    for record in records:
        if record.error() is not None:
            continue
        key = cast(Key, (record.topic(), record.partition()))
        batches.setdefault(key, []).append(record)
    return batches


def _where(record: Message) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"
