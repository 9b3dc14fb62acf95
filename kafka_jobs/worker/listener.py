"""The listener: the only thread touching its Consumer; polls, schedules, commits, rebalances."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_jobs.events import EventBus
from kafka_jobs.settings import Settings
from kafka_jobs.worker.jobs import Job, PartitionState
from kafka_jobs.worker.queue import JobsQueue
from kafka_jobs.worker.scheduler import SerializedScheduler

log = logging.getLogger("kafka_jobs.listener")

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SubscriptionGroup:
    """Topics that share one consumer connection (and so one poll loop)."""

    name: str
    topics: tuple[str, ...]


class Listener:
    """Owns one Consumer for one subscription group and runs its fetch loop on its own thread.

    Thread contract: `consumer`, `states` and the offset trackers are touched only
    by the listener thread (the rebalance callbacks run inside `consume()` on it).
    Other threads talk to it only through the jobs queue and the `stopping` event.
    """

    def __init__(
        self,
        group: SubscriptionGroup,
        settings: Settings,
        consumer_config: dict[str, Any],
        queue: JobsQueue,
        scheduler: SerializedScheduler,
        events: EventBus,
        stopping: threading.Event,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.group = group
        self.settings = settings
        self.queue = queue
        self.scheduler = scheduler
        self.events = events
        self.stopping = stopping
        self.on_crash = on_crash
        self.states: dict[TopicPartitionKey, PartitionState] = {}
        self._consumer_config = consumer_config
        self._consumer: Consumer | None = None
        self._committed: dict[TopicPartitionKey, int] = {}
        self._last_commit = 0.0
        self._last_tick = 0.0
        self.thread = threading.Thread(
            target=self._run, name=f"kafka-jobs-listener-{group.name}", daemon=True
        )

    @property
    def consumer(self) -> Consumer:
        """The group's consumer (listener thread only)."""
        assert self._consumer is not None, "listener not started"
        return self._consumer

    def start(self) -> None:
        """Connect and start the fetch loop thread."""
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish its shutdown."""
        self.thread.join(timeout)

    # --- the loop, as named steps ----------------------------------------

    def _run(self) -> None:
        try:
            config = dict(self._consumer_config)
            config["on_commit"] = self._on_commit
            self._consumer = Consumer(config)
            self.consumer.subscribe(
                list(self.group.topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._fetch_loop()
            self._shutdown()
        except BaseException as error:
            log.exception("listener %s crashed", self.group.name)
            self.events.emit("worker.error", where="listener", error=error)
            self.on_crash(error)
        finally:
            if self._consumer is not None:
                self._close()

    def _fetch_loop(self) -> None:
        poll_timeout = self.settings.poll_timeout
        while not self.stopping.is_set():
            self._collect_finished()
            self._commit_if_due()
            self._tick_if_due()
            if not self.queue.wait_unblocked(self.group.name, poll_timeout):
                continue
            records = self.consumer.consume(self.settings.batch_size, poll_timeout)
            if records:
                self._schedule(self._build_jobs(records))

    def _build_jobs(self, records: Sequence[Message]) -> list[Job]:
        batches: dict[TopicPartitionKey, list[Message]] = {}
        for record in records:
            error = record.error()
            if error is not None:
                self._consumer_error(error)
                continue
            key = cast(TopicPartitionKey, (record.topic(), record.partition()))
            batch = batches.get(key)
            if batch is None:
                batches[key] = batch = []
            batch.append(record)
        jobs = []
        for key, batch in batches.items():
            state = self.states.get(key)
            if state is None:  # fetched just before the partition was revoked
                continue
            state.tracker.register(cast(int, record.offset()) for record in batch)
            jobs.append(Job(self.group.name, state, batch))
        return jobs

    def _schedule(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        self.queue.track(jobs)
        self.scheduler.schedule_consumption(jobs)

    def _collect_finished(self) -> None:
        for job in self.queue.take_finished(self.group.name):
            if not job.state.revoked and job.done_offsets:
                job.state.tracker.mark_done(job.done_offsets)

    def _commit_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_commit >= self.settings.commit_interval:
            self._commit(asynchronous=True)

    def _tick_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= self.settings.tick_interval:
            self._last_tick = now
            self.scheduler.manage()

    # --- offsets -----------------------------------------------------------

    def _commit(self, asynchronous: bool, keys: Sequence[TopicPartitionKey] | None = None) -> None:
        """Commit every owned partition whose committable offset moved (listener thread)."""
        self._last_commit = time.monotonic()
        offsets = []
        for key in self.states if keys is None else keys:
            state = self.states.get(key)
            if state is None or state.revoked:
                continue
            offset = state.tracker.committable()
            if offset is not None and offset != self._committed.get(key):
                offsets.append(TopicPartition(key[0], key[1], offset))
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the offsets stay uncommitted and the records may run again.
            log.warning("offset commit failed for %s: %s", self.group.name, exc)
            return
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        if not asynchronous:
            self.events.emit("offsets.committed", group=self.group.name, offsets=_as_dict(offsets))

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("asynchronous offset commit failed: %s", error)
            for tp in partitions:  # forget so the next round retries it
                self._committed.pop((tp.topic, tp.partition), None)
        elif error is None:
            self.events.emit(
                "offsets.committed", group=self.group.name, offsets=_as_dict(partitions)
            )

    # --- rebalance callbacks (run inside consume(), on the listener thread) --------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.states[key] = PartitionState(tp.topic, tp.partition)
            self._committed.pop(key, None)
        self.events.emit("partitions.assigned", group=self.group.name, partitions=_keys(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        # Finished work on these partitions is committed before another member takes them.
        self._collect_finished()
        self._commit(asynchronous=False, keys=keys)
        self._drop(keys)
        self.events.emit("partitions.revoked", group=self.group.name, partitions=keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        self._drop(keys)  # never commit for a partition another member may already own
        self.events.emit("partitions.lost", group=self.group.name, partitions=keys)

    def _drop(self, keys: Sequence[TopicPartitionKey]) -> None:
        for key in keys:
            state = self.states.pop(key, None)
            if state is not None:
                state.revoke()
            self._committed.pop(key, None)

    # --- shutdown -----------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop fetching, let in-flight jobs finish (bounded), commit, leave the group."""
        owned = [TopicPartition(t, p) for t, p in self.states]
        if owned:
            try:
                self.consumer.pause(owned)
            except KafkaException as exc:
                log.warning("pause on shutdown failed: %s", exc)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.queue.unfinished(self.group.name) and time.monotonic() < deadline:
            # Keep polling so the group membership and rebalances are served; with every
            # partition paused nothing new is fetched, and stray records are never committed.
            self.consumer.consume(self.settings.batch_size, 0)
            self.queue.wait_finished(self.group.name, self.settings.poll_timeout)
            self._collect_finished()
        self._collect_finished()
        left = self.queue.unfinished(self.group.name)
        if left:
            log.warning(
                "%s: %d job(s) still running after shutdown_timeout; not committed",
                self.group.name,
                left,
            )
        self._commit(asynchronous=False)

    def _close(self) -> None:
        try:
            # Leaves the group at once instead of after the session timeout.
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed: %s", exc)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error in %s: %s", self.group.name, error)


def _keys(partitions: Sequence[TopicPartition]) -> list[TopicPartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


def _as_dict(partitions: Sequence[TopicPartition]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": tp.offset for tp in partitions}
