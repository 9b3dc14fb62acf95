"""The listener: the only thread touching its Consumer; polls, schedules, commits, rebalances.

It is the largest module because everything that must run on the consumer's
thread lives here: the fetch loop, pausing and seeking (retries, long-running
jobs, lanes), offset commits, rebalance callbacks, recovery resets, lifecycle
hooks and shutdown. The pure parts it relies on are elsewhere (offsets, lanes,
poll guard, jobs). Candidates to move out next: rebalance handling and hooks.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_jobs.events import EventBus
from kafka_jobs.hooks import JOB_KINDS, LifecycleHook
from kafka_jobs.lanes import split
from kafka_jobs.options import TopicOptions
from kafka_jobs.patterns import TopicPattern
from kafka_jobs.settings import Settings
from kafka_jobs.worker import offset_metadata
from kafka_jobs.worker.jobs import Job, LaneBatch, PartitionState
from kafka_jobs.worker.pollguard import PollIntervalGuard
from kafka_jobs.worker.queue import JobsQueue
from kafka_jobs.worker.scheduler import SerializedScheduler

log = logging.getLogger("kafka_jobs.listener")

TopicPartitionKey = tuple[str, int]
_REGULAR = TopicOptions()

STATS_INTERVAL_MS = 1000
"""librdkafka statistics interval: lag per partition and the group's join state."""
JOIN_SETTLE_TIMEOUT = 10.0
"""Most seconds a closing listener waits for a rebalance round to end before leaving."""


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """One owned partition as its listener sees it."""

    group: str
    topic: str
    partition: int
    committable: int | None
    committed: int | None
    jobs_running: int
    done_above: int
    paused: bool


@dataclass(frozen=True, slots=True)
class SubscriptionGroup:
    """Topics that share one consumer connection (and so one poll loop)."""

    name: str
    topics: tuple[str, ...]
    pattern: TopicPattern | None = None
    """Also consume the existing topics it selects, checked every `pattern_refresh_interval`."""


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
        consumption: Mapping[str, TopicOptions] | None = None,
        concurrency: int = 1,
        hooks: Sequence[LifecycleHook] = (),
        consumption_of: Callable[[str], TopicOptions] | None = None,
        on_new_topics: Callable[[list[str]], None] | None = None,
    ) -> None:
        consumption = consumption or {}
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
        # What was last committed per partition: (offset, metadata).
        self._committed: dict[TopicPartitionKey, tuple[int, str]] = {}
        # Whether the broker returns offset-commit metadata: None until probed.
        self.metadata_supported: bool | None = None
        self._metadata_probe: TopicPartition | None = None
        self._in_flight: set[Job] = set()
        # Paused partitions: key -> (monotonic time to resume, offset to resume at);
        # infinity while a long-running job runs, its due time while a record waits to retry.
        self._paused: dict[TopicPartitionKey, tuple[float, int]] = {}
        # Revoked partitions whose long-running job still runs, in case they come back.
        self._retired: dict[TopicPartitionKey, PartitionState] = {}
        self._pause_after_assign: list[TopicPartitionKey] = []
        # Partitions whose lanes collapsed: run sequentially until this offset is done.
        self._collapsed: dict[TopicPartitionKey, int] = {}
        self.concurrency = concurrency
        self._consumer_group_metadata: object | None = None
        self._reset_requested = threading.Event()
        # A pattern's topics are not known yet: keep every hook (each checks its topic).
        self._hooks = [
            h
            for h in hooks
            if group.pattern is not None or any(h.applies_to(t) for t in group.topics)
        ]
        self._hook_due: dict[int, float] = {}  # periodic hook index -> monotonic due time
        self._last_idle = 0.0
        self._fatal_errors: list[float] = []
        self._topics = {topic: options for topic, options in consumption.items()}
        # With a topic pattern: what is subscribed now, and how to learn about new topics.
        self.subscribed: tuple[str, ...] = group.topics
        self._consumption_of = consumption_of
        self._on_new_topics = on_new_topics
        self._pattern_checked = 0.0
        # From librdkafka's statistics (listener thread): lag per partition, the
        # group's join state, and when the last report came.
        self.lag: dict[TopicPartitionKey, int] = {}
        self.join_state = ""
        self._stats_at = 0.0
        self._stats_interval = STATS_INTERVAL_MS / 1000
        self._user_stats_cb = consumer_config.get("stats_cb")
        self.abandoned = 0
        self._last_commit = 0.0
        self._last_poll = time.monotonic()
        self.guard = PollIntervalGuard(
            group.name,
            int(consumer_config.get("max.poll.interval.ms", 300_000)),
            settings.batch_size,
            settings.adaptive_batch,
            events,
        )
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

    def report(self) -> list[PartitionReport]:
        """A snapshot of the owned partitions (any thread; approximate while it runs).

        jobs_running counts unfinished jobs: with virtual partitions, the busy lanes.
        """
        running: dict[TopicPartitionKey, int] = {}
        for job in list(self._in_flight):
            if not job.finished:
                key = (job.topic, job.partition)
                running[key] = running.get(key, 0) + 1
        reports = []
        for key, state in sorted(list(self.states.items())):
            committed = self._committed.get(key)
            reports.append(
                PartitionReport(
                    group=self.group.name,
                    topic=key[0],
                    partition=key[1],
                    committable=state.tracker.committable(),
                    committed=committed[0] if committed else None,
                    jobs_running=running.get(key, 0),
                    done_above=len(state.tracker.done_above()),
                    paused=key in self._paused,
                )
            )
        return reports

    # --- the loop, as named steps ----------------------------------------

    def _run(self) -> None:
        try:
            self._connect()
            self._fetch_loop()
            self._shutdown()
        except BaseException as error:
            log.exception("listener %s crashed", self.group.name)
            self.events.emit("worker.error", where="listener", error=error)
            self.on_crash(error)
        finally:
            if self._consumer is not None:
                self._close()

    def _connect(self) -> None:
        config = dict(self._consumer_config)
        config["on_commit"] = self._on_commit
        config["stats_cb"] = self._on_stats
        config.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        self._stats_interval = max(int(config["statistics.interval.ms"]), 1) / 1000
        self._consumer = Consumer(config)
        if self.group.pattern is None:
            self._subscribe(self.group.topics)
        else:
            self.subscribed = ()
            self._refresh_pattern()

    def _subscribe(self, topics: Sequence[str]) -> None:
        self.subscribed = tuple(topics)
        if not topics:  # librdkafka refuses an empty subscription
            self.consumer.unsubscribe()
            return
        self.consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _refresh_pattern(self) -> None:
        """Subscribe to what the group's pattern selects now, if that changed (listener thread)."""
        pattern = self.group.pattern
        if pattern is None:
            return
        self._pattern_checked = time.monotonic()
        try:
            existing = self.consumer.list_topics(timeout=5).topics
        except KafkaException as exc:  # the broker is away: keep the subscription as it is
            log.warning("cannot list topics for the pattern of %s: %s", self.group.name, exc)
            return
        wanted = pattern.select(existing)
        if tuple(wanted) == self.subscribed:
            return
        new = sorted(set(wanted) - set(self.subscribed))
        for topic in new:
            if topic not in self._topics and self._consumption_of is not None:
                self._topics[topic] = self._consumption_of(topic)
        if new and self._on_new_topics is not None:
            self._on_new_topics(new)
        log.info(
            "subscription group %s: pattern %r selects %s",
            self.group.name,
            pattern.regex.pattern,
            ", ".join(wanted) or "no topic yet",
        )
        self._subscribe(wanted)
        self.events.emit("topics.subscribed", group=self.group.name, topics=wanted)

    def _refresh_pattern_if_due(self) -> None:
        if time.monotonic() - self._pattern_checked >= self.settings.pattern_refresh_interval:
            self._refresh_pattern()

    def request_reset(self) -> None:
        """Ask for a recovery reset of this group's connection (any thread)."""
        self._reset_requested.set()

    def _reset(self) -> None:
        """Recovery reset: drop unscheduled jobs, let running ones skip, reconnect.

        What finished is committed first; everything else is consumed again by the
        new connection from the committed offsets, so nothing is lost.
        """
        self._reset_requested.clear()
        log.warning("resetting the connection of subscription group %s", self.group.name)
        self._collect_finished()
        for job in self._in_flight:
            if not job.state.revoked:
                self._mark_progress(job)
        self._commit(asynchronous=False)
        dropped = self.scheduler.clear(self.group.name)
        self.queue.forget(self.group.name, dropped)
        for state in self.states.values():
            state.revoke()  # queued jobs of the old connection skip user code
        self.queue.wait_finished(self.group.name, self.settings.shutdown_timeout)
        self._collect_finished()
        self._close()
        for table in (self.states, self._paused, self._retired, self._collapsed, self._committed):
            table.clear()
        self._in_flight.clear()
        self._pause_after_assign.clear()
        self._connect()
        self.events.emit("group.reset", group=self.group.name, dropped=len(dropped))

    def _fetch_loop(self) -> None:
        poll_timeout = self.settings.poll_timeout
        while not self.stopping.is_set():
            if self._reset_requested.is_set():
                self._reset()
            self._collect_finished()
            self._resume_due()
            self._commit_if_due()
            self._tick_if_due()
            if self.group.pattern is not None:
                self._refresh_pattern_if_due()
            if not self.queue.wait_unblocked(self.group.name, poll_timeout):
                self._watch_stall()
                continue
            # Blocking jobs that just finished may ask for a retry: pause before fetching more.
            self._collect_finished()
            records = self.consumer.consume(self.guard.batch_size, poll_timeout)
            self._last_poll = time.monotonic()
            self._apply_deferred_pauses()
            if records:
                self._schedule(self._build_jobs(records))
            elif self._hooks:
                self._idle_hooks()
            if self._hooks:
                self._periodic_hooks()

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
            # Not owned any more, or paused (fetched before the pause took effect): these
            # records are fetched again when the partition resumes.
            if state is None or key in self._paused:
                continue
            tracker = state.tracker
            first = cast(int, batch[0].offset())
            last = tracker.last_registered
            mark = tracker.committable()
            if (last is not None and first <= last) or (mark is not None and first < mark):
                # The position moved backwards (offset reset, an overridden seek).
                log.warning("%s[%d] went back to offset %d; re-running from there", *key, first)
                tracker.rewind(first)
            tracker.register(cast(int, record.offset()) for record in batch)
            # Records already done (collapse re-runs, commit metadata) are registered
            # so the committed offset can pass them, but not run again.
            todo = [r for r in batch if not tracker.is_done(cast(int, r.offset()))]
            if todo:
                jobs.extend(self._jobs_for(key, state, todo))
        return jobs

    def _jobs_for(
        self, key: TopicPartitionKey, state: PartitionState, records: list[Message]
    ) -> list[Job]:
        """One job for the partition's records, or one per lane with virtual partitions."""
        options = self._topics.get(key[0]) or _REGULAR
        blocking, manual = not options.long_running, options.manual_offsets
        virtual = options.virtual_partitions
        collapsed_until = self._collapsed.get(key)
        if collapsed_until is not None and state.tracker.is_done(collapsed_until):
            del self._collapsed[key]  # the collapsed batch is behind us: back to lanes
            collapsed_until = None
        if virtual is None or collapsed_until is not None:
            job = Job(self.group.name, state, records, blocking=blocking, manual=manual)
            if virtual is None:  # only then can a transaction carry the record's offset
                job.group_metadata = self._group_metadata()
            return [job]
        lanes = split(records, virtual, virtual.max_partitions or self.concurrency)
        batch = LaneBatch(cast(int, records[-1].offset()))
        batch.lanes = [
            Job(self.group.name, state, lane, blocking=blocking, manual=manual, batch=batch)
            for lane in lanes
        ]
        batch.left = len(batch.lanes)
        return batch.lanes

    def _schedule(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        for job in jobs:
            if not job.blocking:  # keep polling while it runs, without fetching more for it
                self._pause((job.topic, job.partition), math.inf, -1)
        self._in_flight.update(jobs)
        self.queue.track(jobs)
        self.scheduler.schedule_consumption(jobs)

    def _watch_stall(self) -> None:
        holders = [job for job in self._in_flight if job.blocking and not job.finished]
        if holders:
            job = holders[0]
            self.guard.watch(
                time.monotonic() - self._last_poll,
                f"the batch of {job.topic}[{job.partition}] ({job.size} records,"
                f" {job.processed} done)",
            )

    # --- lifecycle hooks ----------------------------------------------------

    def _run_hooks(
        self, event: str, states: Sequence[PartitionState], hook: LifecycleHook | None = None
    ) -> None:
        """Hand one job per (partition, hook) of `event` to the scheduler."""
        hooks = [hook] if hook is not None else [h for h in self._hooks if h.event == event]
        jobs = [
            Job.lifecycle(
                self.group.name,
                state,
                JOB_KINDS[event],
                functools.partial(h.fn, state.topic, state.partition),
            )
            for state in states
            for h in hooks
            if h.applies_to(state.topic)
        ]
        if jobs:
            self.queue.track(jobs)
            self.scheduler.schedule(JOB_KINDS[event], jobs)

    def _idle_hooks(self) -> None:
        now = time.monotonic()
        if now - self._last_idle < self.settings.tick_interval:
            return
        self._last_idle = now
        idle = [state for key, state in self.states.items() if key not in self._paused]
        self._run_hooks("idle", idle)

    def _periodic_hooks(self) -> None:
        now = time.monotonic()
        for index, hook in enumerate(self._hooks):
            if hook.event != "periodic" or hook.every is None:
                continue
            due = self._hook_due.setdefault(index, now + hook.every)
            if due <= now:
                self._hook_due[index] = now + hook.every
                self._run_hooks("periodic", list(self.states.values()), hook)

    def _collect_finished(self) -> None:
        measured: set[str] = set()
        for job in self.queue.take_finished(self.group.name):
            if job.hook is not None:
                continue  # housekeeping: no offsets, no pause
            self._in_flight.discard(job)
            if job.durations and job.blocking:  # the guard is for regular topics
                self.guard.observe(job.topic, job.durations)
                measured.add(job.topic)
            state = job.state
            key = (job.topic, job.partition)
            if state.revoked:
                if self._retired.get(key) is state:
                    del self._retired[key]
                continue
            self._mark_progress(job)
            if job.batch is not None:
                self._lane_finished(key, job)
            elif job.resume_from is not None:  # a record waits for its retry
                state.tracker.rewind(job.resume_from)
                self._pause(key, job.retry_at, job.resume_from)
            elif not job.blocking:
                self._pause(key, 0.0, job.next_offset())  # resumes on the next loop step
        if measured:
            self.guard.review(measured, time.monotonic())

    def _lane_finished(self, key: TopicPartitionKey, job: Job) -> None:
        batch = job.batch
        assert batch is not None
        batch.left -= 1
        if batch.left:
            return
        if batch.collapsed.is_set():
            # A lane failed: run the batch's unfinished records again, one by one, so
            # retries and dead letters apply to exactly the failing record.
            first = batch.next_offset()
            log.warning(
                "%s[%d]: a lane failed; re-running from offset %d sequentially", *key, first
            )
            job.state.tracker.rewind(first)
            self._collapsed[key] = batch.last_offset
            self._pause(key, 0.0, first)
        elif not job.blocking:
            self._pause(key, 0.0, batch.next_offset())

    def _mark_progress(self, job: Job) -> None:
        """Mark the records a job finished so far (it appends in order; read a stable prefix)."""
        done = job.done_offsets
        count = len(done)
        if count > job.marked:
            job.state.tracker.mark_done(done[job.marked : count])
            job.marked = count

    def _group_metadata(self) -> object:
        if self._consumer_group_metadata is None:
            self._consumer_group_metadata = self.consumer.consumer_group_metadata()
        return self._consumer_group_metadata

    def _apply_deferred_pauses(self) -> None:
        # A partition cannot be paused inside the assignment callback (it is assigned
        # after the callback returns), so reclaimed ones are paused here.
        while self._pause_after_assign:
            key = self._pause_after_assign.pop()
            if key in self.states:
                self.consumer.pause([TopicPartition(*key)])

    def _pause(self, key: TopicPartitionKey, until: float, offset: int) -> None:
        """Pause a partition until `until` (monotonic), then continue at `offset`."""
        if key not in self._paused:
            self.consumer.pause([TopicPartition(*key)])
        self._paused[key] = (until, offset)

    def _resume_due(self) -> None:
        if not self._paused:
            return
        now = time.monotonic()
        for key, (due, offset) in list(self._paused.items()):
            if due > now:
                continue
            del self._paused[key]
            if key in self.states:
                # Pausing dropped the prefetched records: fetch again from where work stops.
                partition = TopicPartition(key[0], key[1], offset)
                try:
                    self.consumer.seek(partition)
                    self.consumer.resume([partition])
                except KafkaException as exc:  # e.g. _STATE just after an assignment
                    log.debug("seek of %s[%d] refused (%s); trying again", *key, exc)
                    self._paused[key] = (now + 0.1, offset)

    def _metadata_for(self, state: PartitionState, offset: int) -> tuple[str, str | None]:
        """(the commit's metadata, the job metadata in it) for a commit at `offset`.

        The finished offsets above the commit go in too, so a new owner skips them
        (when the broker returns metadata: without, they would only cost bytes).
        """
        options = self._topics.get(state.topic) or _REGULAR
        virtual = options.virtual_partitions
        strategy = virtual.offset_metadata_strategy if virtual is not None else "exact"
        user = state.metadata_for_commit(offset, strategy)
        if self.metadata_supported is False:
            return offset_metadata.compose("", user), user
        # Kafka measures metadata in UTF-16 code units (Java strings).
        used = len(user.encode("utf-16-le")) // 2 + 1 if user is not None else 0
        room = offset_metadata.MAX_CHARS - used
        bitmap = offset_metadata.encode(offset, state.tracker.done_above(), room)
        return offset_metadata.compose(bitmap, user), user

    def _probe_metadata(self) -> None:
        """Once: does the broker return the metadata we commit? If not, stop sending it."""
        probe, self._metadata_probe = self._metadata_probe, None
        if probe is None or self.metadata_supported is not None:
            return
        try:
            stored = self.consumer.committed([TopicPartition(probe.topic, probe.partition)], 10)
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

    def _commit_if_due(self) -> None:
        self._probe_metadata()
        now = time.monotonic()
        if now - self._last_commit >= self.settings.commit_interval:
            # Long batches commit what they finished so far, so progress survives a kick.
            for job in self._in_flight:
                if not job.state.revoked:
                    self._mark_progress(job)
            self._commit(asynchronous=True)

    def _tick_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= self.settings.tick_interval:
            self._last_tick = now
            self.scheduler.manage()

    # --- offsets -----------------------------------------------------------

    def _commit(self, asynchronous: bool, keys: Sequence[TopicPartitionKey] | None = None) -> None:
        """Commit owned partitions whose committable offset moved (listener thread).

        Synchronous commits (revocation, shutdown) ignore what earlier asynchronous
        commits claimed: one of those may still fail.
        """
        self._last_commit = time.monotonic()
        offsets = []
        given: list[tuple[PartitionState, str | None]] = []
        for key in self.states if keys is None else keys:
            state = self.states.get(key)
            if state is None or state.revoked:
                continue
            offset = state.tracker.committable()
            if offset is None and self.metadata_supported is not False:
                offset = state.tracker.held_at()
            if offset is None:
                continue
            metadata, user = self._metadata_for(state, offset)
            if not asynchronous or (offset, metadata) != self._committed.get(key):
                if metadata:
                    offsets.append(TopicPartition(key[0], key[1], offset, metadata))
                else:
                    offsets.append(TopicPartition(key[0], key[1], offset))
                given.append((state, user))
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
                for tp in offsets:  # optimistic; _on_commit forgets failures
                    self._committed[(tp.topic, tp.partition)] = (tp.offset, tp.metadata or "")
            else:
                result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the offsets stay uncommitted and the records may run again.
            log.warning("offset commit failed for %s: %s", self.group.name, exc)
            return
        for state, user in given:
            state.committed_metadata = user
        if not asynchronous:
            self._on_commit(None, result)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return
        committed = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if error is not None or tp.error is not None:
                log.warning("offset commit of %s[%d] failed: %s", *key, error or tp.error)
                if self._committed.get(key, (None,))[0] == tp.offset:
                    del self._committed[key]  # so the next round commits it again
            else:
                self._committed[key] = (tp.offset, tp.metadata or "")
                if tp.metadata and self.metadata_supported is None:
                    self._metadata_probe = tp
                committed.append(tp)
        if committed:
            self.events.emit(
                "offsets.committed", group=self.group.name, offsets=_as_dict(committed)
            )

    # --- rebalance callbacks (run inside consume(), on the listener thread) --------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._consumer_group_metadata = None  # the generation changed
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._committed.pop(key, None)
            retired = self._retired.pop(key, None)
            if retired is not None and self._still_running(retired):
                # Given back while its long-running job still runs (eager rebalance): the
                # job carries on, the partition stays paused until it is done.
                retired.reinstate()
                self.states[key] = retired
                self._paused[key] = (math.inf, -1)
                self._pause_after_assign.append(key)
                continue
            self.states[key] = PartitionState(tp.topic, tp.partition)
        self._skip_finished(partitions)
        self.events.emit("partitions.assigned", group=self.group.name, partitions=_keys(partitions))

    def _skip_finished(self, partitions: list[TopicPartition]) -> None:
        """Records a former owner finished above its commit (commit metadata) will not run again."""
        if self.metadata_supported is False or not partitions:
            return
        try:
            stored = self.consumer.committed(partitions, 10)
        except KafkaException as exc:
            log.warning("could not read committed offsets on assignment: %s", exc)
            return
        for tp in stored:
            state = self.states.get((tp.topic, tp.partition))
            if state is None:
                continue
            state.committed_metadata = offset_metadata.split(tp.metadata)[1]
            done = offset_metadata.decode(tp.offset, tp.metadata)
            if done:
                state.tracker.mark_done(done)

    def _still_running(self, state: PartitionState) -> bool:
        return any(job.state is state and not job.finished for job in self._in_flight)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        self._run_hooks("revoked", [self.states[k] for k in keys if k in self.states])
        # Finished work on these partitions, including what running jobs have done so
        # far, is committed before another member takes them.
        self._collect_finished()
        for job in self._in_flight:
            if (job.topic, job.partition) in keys:
                self._mark_progress(job)
        self._commit(asynchronous=False, keys=keys)
        self._drop(keys)
        self.events.emit("partitions.revoked", group=self.group.name, partitions=keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        self._run_hooks("revoked", [self.states[k] for k in keys if k in self.states])
        self._drop(keys)  # never commit for a partition another member may already own
        self.events.emit("partitions.lost", group=self.group.name, partitions=keys)

    def _drop(self, keys: Sequence[TopicPartitionKey]) -> None:
        for key in keys:
            state = self.states.pop(key, None)
            if state is not None:
                state.revoke()
                if self._still_running(state):
                    self._retired[key] = state
            self._committed.pop(key, None)
            if self._paused.pop(key, None) is not None:
                # librdkafka keeps a pause across revoke and re-assign: lift it, or a
                # partition that comes back would never be fetched again.
                self._resume_quietly(key)
            self._collapsed.pop(key, None)

    def _resume_quietly(self, key: TopicPartitionKey) -> None:
        try:
            self.consumer.resume([TopicPartition(*key)])
        except KafkaException as exc:
            log.debug("resume of %s[%d] on revoke failed: %s", *key, exc)

    # --- shutdown -----------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop fetching, let in-flight jobs finish (bounded), commit, leave the group."""
        self._run_hooks("shutdown", list(self.states.values()))
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
            self._tick_if_due()  # a scheduler holding jobs until a tick must release them
            self.queue.wait_finished(self.group.name, self.settings.poll_timeout)
            self._collect_finished()
        self._collect_finished()
        for job in self._in_flight:  # what abandoned jobs finished so far still counts
            if not job.state.revoked:
                self._mark_progress(job)
        self.abandoned = self.queue.unfinished(self.group.name)
        if self.abandoned:
            log.warning(
                "%s: %d job(s) still running after shutdown_timeout; their unfinished"
                " records are not committed",
                self.group.name,
                self.abandoned,
            )
        self._commit(asynchronous=False)

    def _on_stats(self, raw: str) -> None:
        """librdkafka's statistics (inside consume(), listener thread): lag and join state."""
        try:
            stats = json.loads(raw)
            self.join_state = str(stats.get("cgrp", {}).get("join_state", ""))
            lag: dict[TopicPartitionKey, int] = {}
            for topic, entry in stats.get("topics", {}).items():
                for number, partition in entry.get("partitions", {}).items():
                    value = int(partition.get("consumer_lag", -1))
                    if int(number) >= 0 and value >= 0 and (topic, int(number)) in self.states:
                        lag[(topic, int(number))] = value
            self.lag = lag
            self._stats_at = time.monotonic()
        except (ValueError, TypeError, AttributeError) as exc:
            log.debug("unreadable consumer statistics: %s", exc)
        if self._user_stats_cb is not None:
            self._user_stats_cb(raw)

    def _settle_membership(self) -> None:
        """Before leaving: let a rebalance round in progress finish (bounded).

        A member that leaves in the middle of a round, after being elected its
        leader, makes everyone join again; some brokers (the embedded one) even
        keep waiting for the departed leader's assignment for good.
        """
        deadline = time.monotonic() + JOIN_SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            # The last report is at most one interval old: steady then is steady enough.
            fresh = time.monotonic() - self._stats_at < self._stats_interval * 1.5
            if fresh and self.join_state in ("steady", "init", ""):
                return
            self.consumer.consume(self.settings.batch_size, 0.1)  # paused: serves the group only
        log.warning("%s: left during a rebalance (%s)", self.group.name, self.join_state)

    def _close(self) -> None:
        if self._stats_at:  # statistics flow: use them to leave between rounds
            try:
                self._settle_membership()
            except KafkaException as exc:
                log.debug("waiting for a steady group before leaving: %s", exc)
        try:
            # Leaves the group at once instead of after the session timeout.
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed: %s", exc)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            now = time.monotonic()
            self._fatal_errors = [t for t in self._fatal_errors if now - t < 60] + [now]
            if len(self._fatal_errors) > 3:  # resets are not helping: stop
                raise KafkaException(error)
            log.error("fatal consumer error in %s: %s; resetting", self.group.name, error)
            self.request_reset()
            return
        log.warning("consumer error in %s: %s", self.group.name, error)


def _keys(partitions: Sequence[TopicPartition]) -> list[TopicPartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


def _as_dict(partitions: Sequence[TopicPartition]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": tp.offset for tp in partitions}
