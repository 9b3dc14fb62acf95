"""The Worker: wires listeners, the jobs queue, the scheduler and the thread pool together."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, TypedDict

from kafka_jobs.delay.dispatcher import DelayDispatcher
from kafka_jobs.errors import ConfigurationError
from kafka_jobs.instrumentation.health import Health, HealthServer
from kafka_jobs.instrumentation.metrics import Metrics
from kafka_jobs.instrumentation.publisher import StatePublisher
from kafka_jobs.instrumentation.summary import SummaryLine
from kafka_jobs.patterns import TopicPattern
from kafka_jobs.processing.control import JobControl
from kafka_jobs.processing.executor import Executor
from kafka_jobs.processing.failures import FailureHandler, RetryThenDeadLetter
from kafka_jobs.processing.pool import ThreadPool
from kafka_jobs.processing.ports import Processing
from kafka_jobs.processing.processes import ProcessPool, app_spec_for
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import (
    FifoScheduler,
    Scheduler,
    SerializedScheduler,
    load_scheduler,
)
from kafka_jobs.results import topic as results_topic
from kafka_jobs.results.writer import ResultWriter
from kafka_jobs.revocations import Following
from kafka_jobs.settings import ClientConfig, int_setting
from kafka_jobs.worker.listener import Listener, PartitionReport, SubscriptionGroup

if TYPE_CHECKING:
    from kafka_jobs.app import App

log = logging.getLogger("kafka_jobs.worker")


class WorkerOptions(TypedDict, total=False):
    """The keyword options of `Worker` (what `App.worker()` passes on)."""

    concurrency: int | None
    group_id: str | None
    topics: Iterable[str] | None
    topics_pattern: str | None
    subscription_groups: Mapping[str, Iterable[str]] | None
    shutdown_timeout: float | None
    scheduler_class: type[Scheduler] | None
    failure_handler: FailureHandler | None
    dispatch_delayed: bool
    pool: str | None
    app_spec: str | None


class _Exclusions(TypedDict):
    """`TopicPattern` fields naming what a worker's pattern must never select."""

    never: frozenset[str]
    dead_letter_of: Callable[[str], str | None]
    delay_prefix: str


class Worker:
    """Runs an app's jobs: one listener per subscription group, one queue, N worker threads.

    concurrency: worker threads (default: the app's `concurrency` setting).
    group_id: Kafka consumer group (default: the app's `group_id`).
    topics: topics to consume (default: every registered task's topic, or none
        when `topics_pattern` is given).
    topics_pattern: also consume every existing topic whose whole name matches
        this regular expression, new ones included (see `kafka_jobs.patterns`;
        dead-letter topics match only when named in `topics`).
    subscription_groups: name -> topics, each group gets its own consumer
        connection (default: as topic and job options name them); topics not
        named go to the group ``default``.
    shutdown_timeout: seconds to wait for in-flight jobs on stop.
    scheduler_class: builds the scheduler from the jobs queue (default: the
        `scheduler` setting, else FIFO).
    failure_handler: what happens to records that cannot run or whose job raised
        (default: retry per the job's policy, then the dead-letter topic).
    dispatch_delayed: also run the delay dispatcher that releases delayed jobs.
    pool: "threads" or "processes" (default: the `pool` setting); with
        processes, each worker thread runs sync jobs in its own child process.
    app_spec: `pkg.module[:app]` the child processes import (default: the
        module that defines the app's tasks; the CLI passes its `-A`).

    `start()` / `stop()` / `join()` drive it from Python; `run()` blocks, handles
    SIGTERM / SIGINT, and returns the process exit code.
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int | None = None,
        group_id: str | None = None,
        topics: Iterable[str] | None = None,
        topics_pattern: str | None = None,
        subscription_groups: Mapping[str, Iterable[str]] | None = None,
        shutdown_timeout: float | None = None,
        scheduler_class: type[Scheduler] | None = None,
        failure_handler: FailureHandler | None = None,
        dispatch_delayed: bool = True,
        pool: str | None = None,
        app_spec: str | None = None,
    ) -> None:
        settings = app.settings
        if pool is not None:
            settings = settings.replace(pool=pool)
        if shutdown_timeout is not None:
            settings = settings.replace(shutdown_timeout=shutdown_timeout)
        self.app = app
        self.settings = settings
        self.concurrency = concurrency or settings.concurrency
        self.group_id = group_id or settings.group_id
        if topics is not None:
            self.topics = list(topics)
        else:
            self.topics = [] if topics_pattern else app.topics()
        if not self.topics and not topics_pattern:
            raise ConfigurationError("the worker has no topics: register a task or pass topics=")
        self.consumption = {topic: app.consumption(topic) for topic in self.topics}
        self._check_collapse_can_retry()
        named: dict[str, list[str]] = {
            name: list(members) for name, members in (subscription_groups or {}).items()
        }
        if not named:  # groups named in topic or job options
            for topic, options in self.consumption.items():
                if options.subscription_group:
                    named.setdefault(options.subscription_group, []).append(topic)
        self.groups = _subscription_groups(self.topics, named)
        if topics_pattern:
            self.groups = _with_pattern(self.groups, topics_pattern, self._pattern_exclusions())
        self.stopping = threading.Event()
        self.queue = JobsQueue()
        self.queue.concurrency = self.concurrency
        self.queue.assignments = app.assignments
        if scheduler_class is None:
            scheduler_class = (
                load_scheduler(settings.scheduler) if settings.scheduler else FifoScheduler
            )
        self.scheduler = SerializedScheduler(scheduler_class(self.queue))
        handler = failure_handler or RetryThenDeadLetter.for_app(app, self.group_id)
        self.processes = None
        if settings.pool == "processes":
            manual = [t for t, o in self.consumption.items() if o.manual_offsets]
            if manual:
                raise ConfigurationError(
                    f"topics {manual} use manual_offsets, which jobs in child processes cannot"
                    " mark (mark_as_consumed needs the worker's own process): use the threads pool"
                )
            self.processes = ProcessPool(app_spec_for(app, app_spec), self.concurrency)
        self.control = JobControl()  # revocations, followed from `start()`
        keeps = any(task.keeps_result for task in app.tasks.values())
        self.results = (
            ResultWriter(
                app.producer,
                settings.results_topic,
                settings.results_partitions,
                settings.delivery_timeout,
            )
            if keeps
            else None
        )
        processing = Processing(
            tasks=app,
            settings=settings,
            events=app.events,
            secret=app.secret,
            results=self.results,
            policies=app,
            control=self.control,
        )
        self.executor = Executor(
            processing,
            handler,
            self.stopping,
            resume=self.queue.resume,
            processes=self.processes,
            time_limits={t: o.time_limits for t, o in app.topic_options.items() if o.time_limits},
        )
        self.pool = ThreadPool(
            self.concurrency, self.queue, self.executor, self.scheduler, app.events
        )
        self.executor.watch.set_take_over(self.pool.take_over)  # thread jobs past time_limit
        consumer_config = settings.consumer_settings(self.group_id)
        self.listeners = [
            Listener(
                group,
                settings,
                _member_config(consumer_config, group, len(self.groups)),
                self.queue,
                self.scheduler,
                app.events,
                self.stopping,
                self._listener_crashed,
                self.consumption,
                self.concurrency,
                app.hooks,
                consumption_of=app.consumption,
                on_new_topics=self._create_dead_letter_topics_of,
            )
            for group in self.groups
        ]
        self.dispatcher = (
            DelayDispatcher(
                app.settings, app.producer, app.events, self.stopping, self._listener_crashed
            )
            if dispatch_delayed
            else None
        )
        self.recurring = app.schedules.leader(self, self._listener_crashed)  # None: no schedules
        self.crashed: BaseException | None = None
        self._metrics: Metrics | None = None
        self._reporters: list[SummaryLine | StatePublisher | Following] = []
        app.attach(self)
        self._started = False

    def start(self) -> Worker:
        """Start worker threads and listeners; returns at once."""
        if self._started:
            raise RuntimeError("worker already started")
        self._started = True
        self._create_dead_letter_topics()
        self._reporters.append(Following(self.app, self.control))  # stopped with them
        if self.results is not None:
            results_topic.prepare(self.app, self.results)
        if self.processes is not None:
            self.processes.start()
        self.pool.start()
        for listener in self.listeners:
            listener.start()
        if self.dispatcher is not None:
            self._create_topics(self.app.delay_topics(), "delay")
            self.dispatcher.start()
        if self.recurring is not None:
            self.recurring.start()
        log.info(
            "worker started: group=%s topics=%s concurrency=%d pool=%s subscription_groups=%s",
            self.group_id,
            ",".join(self.topics),
            self.concurrency,
            self.settings.pool,
            ",".join(g.name for g in self.groups),
        )
        return self

    def _check_collapse_can_retry(self) -> None:
        """Virtual partitions + dead letters need a retry: the collapse re-run is that retry."""
        for topic, options in self.consumption.items():
            if options.virtual_partitions is None:
                continue
            # What the user declared counts: each job's own policy, and the topic's default
            # only for a topic none of the app's jobs is routed to.
            names: list[str | None] = [
                t.name for t in self.app.tasks.values() if t.options.topic == topic
            ] or [None]
            for name in names:
                policy = self.app.failure_policy(topic, name)
                if policy.dead_letter_topic and policy.retry.retries < 1:
                    raise ConfigurationError(
                        f"topic {topic!r} uses virtual partitions and a dead-letter topic with"
                        f" retries=0 ({name or 'topic default'}): a failing lane collapses the"
                        " batch and re-runs it sequentially, which is a retry. Set retries>=1"
                        " (or dead_letter_topic=False)."
                    )

    def reset(self, group: str = "default") -> None:
        """Recovery reset of one subscription group's connection (schedulers see `clear`)."""
        for listener in self.listeners:
            if listener.group.name == group:
                listener.request_reset()
                return
        raise ConfigurationError(f"no subscription group named {group!r}")

    def start_reporting(self) -> None:
        """Start what `run()` reports with: the summary line and the published state.

        Each per its interval setting (`summary_interval`, `status_interval`; 0: off).
        They stop with the worker (`join`).
        """
        if self.settings.summary_interval > 0:
            summary = SummaryLine(self, self.metrics(), self.settings.summary_interval)
            self._reporters.append(summary.start())
        if self.settings.status_interval > 0:
            state = StatePublisher(self, self.metrics(), self.settings.status_interval)
            self._reporters.append(state.start())

    def metrics(self) -> Metrics:
        """The worker's counters and gauges (`instrumentation.metrics`), attached on first use.

        Until then no event is built for them: a worker nobody watches runs faster.
        """
        if self._metrics is None:
            self._metrics = Metrics.attach(self.app, self)
        return self._metrics

    def serve_health(
        self, port: int, host: str = "0.0.0.0", stall_after: float | None = None
    ) -> HealthServer:
        """Serve `/live` and `/ready` for probes (`instrumentation.health`); port 0 picks one.

        stall_after: seconds without a poll after which the worker is not live
        (default: the consumer's max.poll.interval.ms).
        """
        if stall_after is None:
            config = self.settings.consumer_settings()
            stall_after = int_setting(config, "max.poll.interval.ms", 300_000) / 1000
        health = Health(self.listeners, stall_after, lambda: self._started)
        return HealthServer(health, port, host).start()

    def lag(self) -> dict[tuple[str, int], int]:
        """Lag per owned partition from librdkafka's statistics (about a second old)."""
        return {key: value for listener in self.listeners for key, value in listener.lag.items()}

    def report(self) -> list[PartitionReport]:
        """Per owned partition: committed offset, jobs (lanes) running, done above the mark."""
        return [report for listener in self.listeners for report in listener.report()]

    def dead_letter_topics(self) -> list[str]:
        """The dead-letter topics of the consumed topics and their tasks, sorted."""
        return self.app.dead_letter_topics(self.topics)

    def _pattern_exclusions(self) -> _Exclusions:
        """What a topic pattern must never select, besides dead letters by name."""
        app = self.app
        return {
            "never": frozenset([*app.dead_letter_topics(), *self.dead_letter_topics()])
            | {self.settings.status_topic},
            "dead_letter_of": lambda topic: app.failure_policy(topic, None).dead_letter_topic,
            "delay_prefix": self.settings.delay_topic_prefix,
        }

    def _create_dead_letter_topics_of(self, topics: list[str]) -> None:
        """Topics a pattern just selected get their dead-letter topics (listener thread)."""
        wanted = {self.app.failure_policy(topic, None).dead_letter_topic for topic in topics}
        self._create_topics(sorted(t for t in wanted if t), "dead-letter")

    def _create_dead_letter_topics(self) -> None:
        """Create missing dead-letter topics (brokers may not auto-create them)."""
        self._create_topics(self.dead_letter_topics(), "dead-letter")

    def _create_topics(self, wanted: list[str], kind: str) -> None:
        if not wanted:
            return
        try:
            created = self.app.create_topics(wanted, partitions=1)
        except Exception as exc:  # the first write there will say it again if this matters
            log.warning("could not create %s topics %s: %s", kind, wanted, exc)
            return
        if created:
            log.info("created %s topics: %s", kind, ", ".join(created))

    def stop(self) -> None:
        """Ask the worker to stop: no more fetching, in-flight jobs finish (bounded), commit."""
        self.stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the shutdown to complete; True if it did within `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        threads = [listener.thread for listener in self.listeners]
        if self.dispatcher is not None:
            threads.append(self.dispatcher.thread)
        if self.recurring is not None:
            threads.append(self.recurring.thread)
        for thread in threads:
            if thread.ident is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = not any(thread.is_alive() for thread in threads)
        if done:
            self.queue.close()
            self.pool.join(0.5)
            self.executor.close()
            reporters, self._reporters = self._reporters, []
            for reporter in reporters:
                reporter.stop()
        return done

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(self.settings.shutdown_timeout + 30)

    def run(self, install_signal_handlers: bool = True) -> int:
        """Run until SIGTERM / SIGINT (or `stop()`); returns 0 after a clean shutdown."""
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        self.start()
        self.start_reporting()
        while not self.stopping.wait(0.5):
            pass
        clean = self.join(self.settings.shutdown_timeout + 30)
        if self.crashed is not None:
            log.error("worker stopped after an internal error: %r", self.crashed)
            return 1
        abandoned = sum(listener.abandoned for listener in self.listeners)
        if abandoned:
            log.error("%d job(s) did not finish within the shutdown timeout", abandoned)
        return 0 if clean and not abandoned else 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            # A second signal means "now": nothing more is committed; unfinished work re-runs.
            log.warning("received %s again: exiting at once", name)
            os._exit(1)
        log.info("received %s: stopping (send it again to exit at once)", name)
        self.stop()

    def _listener_crashed(self, error: BaseException) -> None:
        self.crashed = error
        self.stop()


def _member_config(config: ClientConfig, group: SubscriptionGroup, groups: int) -> ClientConfig:
    """One consumer's config; static membership ids must differ between a process's consumers."""
    instance = config.get("group.instance.id")
    if not instance or groups == 1:
        return config
    return {**config, "group.instance.id": f"{instance}-{group.name}"}


def _with_pattern(
    groups: list[SubscriptionGroup], pattern: str, exclusions: _Exclusions
) -> list[SubscriptionGroup]:
    """The pattern belongs to the group of the topics not placed elsewhere ("default").

    Topics of the other subscription groups are never selected: their own
    connection reads them.
    """
    rest = [g for g in groups if g.name == "default"]
    topics = rest[0].topics if rest else ()
    others = [g for g in groups if g.name != "default"]
    elsewhere = frozenset(t for g in others for t in g.topics)
    try:
        compiled = TopicPattern.compile(
            pattern,
            explicit=frozenset(topics),
            **{**exclusions, "never": exclusions["never"] | elsewhere},
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return [*others, SubscriptionGroup("default", topics, compiled)]


def _subscription_groups(
    topics: list[str], named: Mapping[str, Iterable[str]]
) -> list[SubscriptionGroup]:
    groups: list[SubscriptionGroup] = []
    placed: set[str] = set()
    if "default" in named:
        raise ConfigurationError("'default' is reserved for the topics not placed in a group")
    for name, members in named.items():
        members = tuple(members)
        overlap = placed.intersection(members)
        if overlap:
            raise ConfigurationError(
                f"topics {sorted(overlap)} are in more than one subscription group"
            )
        placed.update(members)
        groups.append(SubscriptionGroup(name, members))
    rest = tuple(t for t in topics if t not in placed)
    if rest:
        groups.append(SubscriptionGroup("default", rest))
    return groups
