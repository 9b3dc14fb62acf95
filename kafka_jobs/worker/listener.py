"""The listener: the thread that owns one subscription group's connection.

Its loop is a list of named steps (reset if asked, collect finished jobs, resume
due pauses, commit, tick, poll, build jobs, schedule them). Everything it drives
on the broker goes through `kafka_jobs.connection` (client, pauses, commits,
statistics); the pure parts are elsewhere (offset tracker, lanes, poll guard,
marks, lifecycle hooks).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from kafka_jobs.connection.client import Client, Key, by_partition
from kafka_jobs.connection.commits import Committer, connect
from kafka_jobs.connection.pauses import PauseTracker, apply_pause, release, resume_due
from kafka_jobs.connection.stats import STATS_INTERVAL_MS, GroupStats, settle_then_close
from kafka_jobs.hooks import LifecycleHook
from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.options import TopicOptions
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import SerializedScheduler
from kafka_jobs.settings import ClientConfig, Settings, callback_setting, int_setting
from kafka_jobs.worker.building import JobBuilder
from kafka_jobs.worker.lifecycle import HookRunner
from kafka_jobs.worker.marks import finished_above, mark_for
from kafka_jobs.worker.pollguard import PollIntervalGuard
from kafka_jobs.worker.subscription import (
    PartitionReport,
    PatternFollower,
    SubscriptionGroup,
    partition_reports,
)
from kafka_jobs.worker.throttling import Throttles, requeue

log = logging.getLogger("kafka_jobs.listener")

TopicPartitionKey = Key
__all__ = ["Listener", "PartitionReport", "SubscriptionGroup"]


class Listener:
    """Owns one group client for one subscription group and runs its fetch loop on its thread.

    Thread contract: the client, `states`, the pause table and the offset trackers
    are touched only by the listener thread (rebalance callbacks run inside
    `poll()` on it). Other threads talk to it through the jobs queue, the
    `stopping` event and `request_reset()`.
    """

    def __init__(
        self,
        group: SubscriptionGroup,
        settings: Settings,
        consumer_config: ClientConfig,
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
        self.group = group
        self.settings = settings
        self.queue = queue
        self.scheduler = scheduler
        self.events = events
        self.stopping = stopping
        self.on_crash = on_crash
        self.states: dict[Key, PartitionState] = {}
        self._consumer_config = consumer_config
        self._client: Client | None = None
        self.committer = Committer(group.name, self._committed)
        self.pauses = PauseTracker()
        self.stats = GroupStats(
            int_setting(consumer_config, "statistics.interval.ms", STATS_INTERVAL_MS),
            callback_setting(consumer_config, "stats_cb"),
        )
        self._in_flight: set[Job] = set()
        # Revoked partitions whose long-running job still runs, in case they come back.
        self._retired: dict[Key, PartitionState] = {}
        self._pause_after_assign: list[Key] = []
        self._group_metadata: object | None = None
        self._reset_requested = threading.Event()
        self.hooks = HookRunner(group, hooks, queue, scheduler, settings.tick_interval)
        self._fatal_errors: list[float] = []
        topics = dict(consumption or {})
        self.builder = JobBuilder(group.name, topics, concurrency, self._generation_metadata)
        self.throttles = Throttles(self.builder.options, self._pause, events)
        self.subscribed: tuple[str, ...] = group.topics
        self.follower = PatternFollower.of(group, topics, settings, consumption_of, on_new_topics)
        self.abandoned = 0
        self._last_commit = 0.0
        self._last_poll = time.monotonic()
        self._last_tick = 0.0
        self.guard = PollIntervalGuard(
            group.name,
            int_setting(consumer_config, "max.poll.interval.ms", 300_000),
            settings.batch_size,
            settings.adaptive_batch,
            events,
        )
        self.thread = threading.Thread(
            target=self._run, name=f"kafka-jobs-listener-{group.name}", daemon=True
        )

    @property
    def client(self) -> Client:
        """The group's client (listener thread only)."""
        assert self._client is not None, "listener not started"
        return self._client

    @property
    def since_poll(self) -> float:
        """Seconds since the fetch loop last polled (any thread): the liveness signal."""
        return time.monotonic() - self._last_poll

    @property
    def lag(self) -> dict[Key, int]:
        """Lag per owned partition, from the latest statistics (any thread)."""
        return self.stats.lag

    def start(self) -> None:
        """Connect and start the fetch loop thread."""
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish its shutdown."""
        self.thread.join(timeout)

    def request_reset(self) -> None:
        """Ask for a recovery reset of this group's connection (any thread)."""
        self._reset_requested.set()

    def report(self) -> list[PartitionReport]:
        """A snapshot of the owned partitions (any thread; approximate while it runs)."""
        return partition_reports(
            self.group.name, dict(self.states), list(self._in_flight), self.committer, self.pauses
        )

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
            if self._client is not None:
                settle_then_close(
                    self.client, self.stats, self.group.name, self.settings.batch_size
                )

    def _fetch_loop(self) -> None:
        poll_timeout = self.settings.poll_timeout
        while not self.stopping.is_set():
            if self._reset_requested.is_set():
                self._reset()
            self._collect_finished()
            resume_due(self.client, self.pauses, time.monotonic(), self.states)
            self._commit_if_due()
            self._tick_if_due()
            if self.follower is not None and self.follower.due():
                self._refresh_pattern()
            if not self.queue.wait_unblocked(self.group.name, poll_timeout):
                self._watch_stall()
                continue
            # Blocking jobs that just finished may ask for a retry: pause before fetching more.
            self._collect_finished()
            # Returns at the first record with whatever else is fetched already: at low
            # load a job need not wait out poll_timeout for a full batch.
            records = self.client.poll_eager(self.guard.batch_size, poll_timeout)
            self._last_poll = time.monotonic()
            self._apply_deferred_pauses()
            if records:
                self._schedule(self._build_jobs(records))
            elif self.hooks:
                self.hooks.idle([s for k, s in self.states.items() if k not in self.pauses])
            if self.hooks:
                self.hooks.periodic(list(self.states.values()))

    # --- connecting ----------------------------------------------------------

    def _connect(self) -> None:
        config = dict(self._consumer_config)
        config.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        self._client = connect(
            config, self.committer, lambda raw: self.stats.receive(raw, self.states)
        )
        if self.group.pattern is None:
            self._subscribe(self.group.topics)
        else:
            self.subscribed = ()
            self._refresh_pattern()

    def _subscribe(self, topics: Sequence[str]) -> None:
        self.subscribed = tuple(topics)
        self.client.subscribe(topics, self)

    def _refresh_pattern(self) -> None:
        """Subscribe to what the group's pattern selects now, if that changed."""
        assert self.follower is not None
        wanted = self.follower.select(self.client, self.subscribed)
        if wanted is not None:
            self._subscribe(wanted)
            self.events.emit("topics.subscribed", group=self.group.name, topics=wanted)

    def _reset(self) -> None:
        """Recovery reset: drop unscheduled jobs, let running ones skip, reconnect.

        What finished is committed first; everything else is consumed again by the
        new connection from the committed offsets, so nothing is lost.
        """
        self._reset_requested.clear()
        log.warning("resetting the connection of subscription group %s", self.group.name)
        self._collect_finished()
        self._mark_running()
        self._commit(asynchronous=False)
        dropped = self.scheduler.clear(self.group.name)
        self.queue.forget(self.group.name, dropped)
        for state in self.states.values():
            state.revoke()  # queued jobs of the old connection skip user code
        self.queue.wait_finished(self.group.name, self.settings.shutdown_timeout)
        self._collect_finished()
        settle_then_close(self.client, self.stats, self.group.name, self.settings.batch_size)
        for table in (self.states, self._retired, self.builder.collapsed):
            table.clear()
        self.pauses.clear()
        self.committer.clear()
        self._in_flight.clear()
        self._pause_after_assign.clear()
        self._connect()
        self.events.emit("group.reset", group=self.group.name, dropped=len(dropped))

    # --- records into jobs ------------------------------------------------------

    def _build_jobs(self, records: Sequence[Message]) -> list[Job]:
        batches, errors = by_partition(records)
        for error in errors:
            self._consumer_error(error)
        jobs: list[Job] = []
        for key, batch in batches.items():
            state = self.states.get(key)
            # Not owned any more, or paused (fetched before the pause took effect): these
            # records are fetched again when the partition resumes.
            if state is not None and key not in self.pauses:
                admitted = self.throttles.admit(key, batch)  # a throttle pauses the rest
                jobs.extend(self.builder.build(key, state, admitted) if admitted else ())
        return jobs

    def _generation_metadata(self) -> object:
        if self._group_metadata is None:  # once per generation
            self._group_metadata = self.client.group_metadata()
        return self._group_metadata

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

    # --- finished jobs ------------------------------------------------------------

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
            job.mark_progress()
            if job.rate_limited:  # the rest waits in memory for its tokens; polling goes on
                self._schedule([requeue(job)])
            elif job.batch is not None:
                self._lane_finished(key, job)
            elif job.resume_from is not None:  # a record waits for its retry
                state.tracker.rewind(job.resume_from)
                self._pause(key, job.retry_at, job.resume_from)
            elif not job.blocking:
                self._pause(key, 0.0, job.next_offset())  # resumes on the next loop step
        if measured:
            self.guard.review(measured, time.monotonic())

    def _lane_finished(self, key: Key, job: Job) -> None:
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
            self.builder.collapsed[key] = batch.last_offset
            self._pause(key, 0.0, first)
        elif not all(lane.blocking for lane in batch.lanes):  # long-running, or a lane requeued
            self._pause(key, 0.0, batch.next_offset())

    def _mark_running(self, keys: Sequence[Key] | None = None) -> None:
        """Mark what running jobs finished so far (of `keys`, or all owned partitions)."""
        for job in self._in_flight:
            if not job.state.revoked and (keys is None or (job.topic, job.partition) in keys):
                job.mark_progress()

    # --- pauses -------------------------------------------------------------------

    def _apply_deferred_pauses(self) -> None:
        # A partition cannot be paused inside the assignment callback (it is assigned
        # after the callback returns), so reclaimed ones are paused here.
        while self._pause_after_assign:
            key = self._pause_after_assign.pop()
            if key in self.states:
                self.client.pause([key])

    def _pause(self, key: Key, until: float, offset: int) -> None:
        """Pause a partition until `until` (monotonic), then continue at `offset`."""
        apply_pause(self.client, self.pauses, key, until, offset)

    def _tick_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= self.settings.tick_interval:
            self._last_tick = now
            self.scheduler.manage()

    # --- offsets -----------------------------------------------------------

    def _commit_if_due(self) -> None:
        self.committer.probe_metadata()
        if time.monotonic() - self._last_commit >= self.settings.commit_interval:
            # Long batches commit what they finished so far, so progress survives a kick.
            self._mark_running()
            self._commit(asynchronous=True)

    def _commit(self, asynchronous: bool, keys: Sequence[Key] | None = None) -> None:
        """Commit owned partitions whose mark moved (async) or all of them (sync)."""
        self._last_commit = time.monotonic()
        marks = {}
        for key in self.states if keys is None else keys:
            state = self.states.get(key)
            if state is None or state.revoked:
                continue
            options = self.builder.options(key[0])
            found = mark_for(state, options, self.committer.metadata_supported)
            if found is not None:
                marks[key] = found
        sent = self.committer.commit([mark for mark, _ in marks.values()], asynchronous)
        for mark in sent or ():
            self.states[mark.key].committed_metadata = marks[mark.key][1]

    def _committed(self, partitions: list[TopicPartition]) -> None:
        if not self.events.active:  # nobody listens: no payload to build
            return
        offsets = {f"{tp.topic}[{tp.partition}]": tp.offset for tp in partitions}
        self.events.emit("offsets.committed", group=self.group.name, offsets=offsets)

    # --- rebalance (inside poll(), on the listener thread) -------------------------

    def assigned(self, keys: list[Key]) -> None:
        """New partitions: fresh states, or a retired one whose long-running job still runs."""
        self._group_metadata = None  # the generation changed
        self.committer.forget(keys)
        for key in keys:
            retired = self._retired.pop(key, None)
            if retired is not None and self._still_running(retired):
                # Given back while its long-running job still runs (eager rebalance): the
                # job carries on, the partition stays paused until it is done.
                retired.reinstate()
                self.states[key] = retired
                self.pauses.pause(key, math.inf, -1)
                self._pause_after_assign.append(key)
                continue
            self.states[key] = PartitionState(*key)
        self._skip_finished(keys)
        self.events.emit("partitions.assigned", group=self.group.name, partitions=keys)

    def _skip_finished(self, keys: list[Key]) -> None:
        """Records a former owner finished above its commit (commit metadata) will not run again."""
        if self.committer.metadata_supported is False or not keys:
            return
        try:
            stored = self.client.committed(keys)
        except KafkaException as exc:
            log.warning("could not read committed offsets on assignment: %s", exc)
            return
        for tp in stored:
            state = self.states.get((tp.topic, tp.partition))
            if state is not None:
                finished_above(state, tp.offset, tp.metadata)

    def _still_running(self, state: PartitionState) -> bool:
        return any(job.state is state and not job.finished for job in self._in_flight)

    def revoked(self, keys: list[Key]) -> None:
        """Partitions leave: what is finished, running jobs' progress included, is committed."""
        self.hooks.run("revoked", [self.states[k] for k in keys if k in self.states])
        self._collect_finished()
        self._mark_running(keys)
        self._commit(asynchronous=False, keys=keys)
        self._drop(keys)
        self.events.emit("partitions.revoked", group=self.group.name, partitions=keys)

    def lost(self, keys: list[Key]) -> None:
        """Partitions taken away: another member may own them already, so nothing is committed."""
        self.hooks.run("revoked", [self.states[k] for k in keys if k in self.states])
        self._drop(keys)
        self.events.emit("partitions.lost", group=self.group.name, partitions=keys)

    def _drop(self, keys: list[Key]) -> None:
        for key in keys:
            state = self.states.pop(key, None)
            if state is not None:
                state.revoke()
                if self._still_running(state):
                    self._retired[key] = state
            self.builder.collapsed.pop(key, None)
        self.committer.forget(keys)
        release(self.client, self.pauses, keys)

    # --- shutdown -----------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop fetching, let in-flight jobs finish (bounded), commit, leave the group."""
        self.hooks.run("shutdown", list(self.states.values()))
        try:
            self.client.pause(list(self.states))
        except KafkaException as exc:
            log.warning("pause on shutdown failed: %s", exc)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.queue.unfinished(self.group.name) and time.monotonic() < deadline:
            # Keep polling so the group membership and rebalances are served; with every
            # partition paused nothing new is fetched, and stray records are never committed.
            self.client.poll(self.settings.batch_size, 0)
            self._tick_if_due()  # a scheduler holding jobs until a tick must release them
            self.queue.wait_finished(self.group.name, self.settings.poll_timeout)
            self._collect_finished()
        self._collect_finished()
        self._mark_running()  # what abandoned jobs finished so far still counts
        self.abandoned = self.queue.unfinished(self.group.name)
        if self.abandoned:
            log.warning(
                "%s: %d job(s) still running after shutdown_timeout; their unfinished"
                " records are not committed",
                self.group.name,
                self.abandoned,
            )
        self._commit(asynchronous=False)

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
