"""The App: one configuration, its registered tasks, its producer, its event bus."""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from kafka_jobs import loader
from kafka_jobs.connection.admin import TopicCreationFailed, admin_client, create_missing
from kafka_jobs.delay.tiers import cancel_topic, tier_topics
from kafka_jobs.errors import ConfigurationError, KafkaJobsError, UnknownTask
from kafka_jobs.hooks import JOB_KINDS, HookEvent, LifecycleHook
from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.options import (
    FailurePolicy,
    JobOptions,
    TopicOptions,
    TopicSettings,
    is_valid_topic_name,
    ordering_option,
    refuse_unknown,
    resolve,
    retry_policy,
    time_limits_option,
)
from kafka_jobs.processing.limits import parse_rate
from kafka_jobs.producer import JobProducer
from kafka_jobs.recurring import Schedule, Schedules
from kafka_jobs.results.handle import JobResult, reader_of
from kafka_jobs.results.handle import release as release_results
from kafka_jobs.settings import Settings
from kafka_jobs.task import Task, TaskOptions

if TYPE_CHECKING:
    from kafka_jobs.worker.runner import Worker, WorkerOptions


def _expires_option(value: float | None) -> float | None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ConfigurationError(f"expires must be a positive number of seconds, not {value!r}")
    return value


_TOPIC_KEYWORDS = frozenset(
    {
        "long_running",
        "manual_offsets",
        "subscription_group",
        "virtual_partitions",
        "partitions",
        "replication_factor",
        "config",
        "throttle",
    }
)
"""Keywords of `@app.job` that describe the job's whole topic (`TaskOptions.topic_flags`)."""

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """A kafka-jobs configuration with its task registry.

    `App()` reads the environment (see `kafka_jobs.settings`); keywords override it,
    e.g. `App(bootstrap_servers="kafka:9092", consumer_config={...})`. Most programs
    use the default app through `@kafka_job`; several configurations need several Apps.

    Thread-safe for enqueueing; register tasks at import time.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = Settings.from_env(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        self.settings = settings
        self.tasks: dict[str, Task[Any, Any]] = {}  # each with its function's own signature
        self.topic_options: dict[str, TopicOptions] = {}
        self.secret = settings.signing_secret.encode() if settings.signing_secret else None
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        self.hooks: list[LifecycleHook] = []
        self.events = EventBus()
        self.producer = JobProducer(settings.producer_settings(), settings.delivery_timeout)
        self.schedules = Schedules()  # recurring jobs (`recurring`), led by one worker
        self.producer.revoker = self.revoke

    @overload
    def job(self, fn: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def job(self, **options: Unpack[JobOptions]) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def job(
        self, fn: Callable[P, R] | None = None, **options: Unpack[JobOptions]
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a job of this app (decorator, with or without options).

        Options (all keyword): see `kafka_jobs.options.JobOptions`.
        """
        refuse_unknown(options, JobOptions, "@kafka_job")
        serializer = options.get("serializer", "json")
        if serializer not in ("json", "dill"):
            raise ConfigurationError(f"unknown serializer {serializer!r}: use 'json' or 'dill'")
        if serializer == "dill" and not self.settings.signing_secret:
            raise ConfigurationError(
                "serializer='dill' needs a signing secret (KAFKA_JOBS_SIGNING_SECRET)"
            )

        def register(function: Callable[P, R]) -> Task[P, R]:
            task_name = options.get("name") or f"{function.__module__}.{function.__qualname__}"
            task_options = TaskOptions(
                topic=options.get("topic") or self.settings.default_topic,
                name=task_name,
                key=options.get("key"),
                retry=retry_policy(options),
                dead_letter_topic=options.get("dead_letter_topic"),
                serializer=serializer,
                keep_result=options.get("keep_result"),
                expires=_expires_option(options.get("expires")),
                time_limits=time_limits_option(options),
                rate_limit=parse_rate(options.get("rate_limit")),
                retry_ordering=ordering_option(options.get("retry_ordering")),
                topic_flags=TopicOptions.from_settings(options)
                if _TOPIC_KEYWORDS & options.keys()
                else None,
            )
            existing = self.tasks.get(task_name)
            if existing is not None and existing.fn is not function:
                raise ConfigurationError(f"task name {task_name!r} is already registered")
            task = Task(function, task_options, self)
            self.tasks[task_name] = task
            return task

        return register if fn is None else register(fn)

    def on(
        self, event: HookEvent, *, topic: str | None = None, every: float | None = None
    ) -> Callable[[Callable[[str, int], None]], Callable[[str, int], None]]:
        """Register `fn(topic, partition)` as a lifecycle hook, for one topic or all.

        Events: "revoked", "shutdown", "idle" or "periodic" (with `every` seconds).
        See `kafka_jobs.hooks`.
        """
        if event not in JOB_KINDS:
            raise ConfigurationError(
                f"unknown hook event {event!r}: use one of {sorted(JOB_KINDS)}"
            )
        if (event == "periodic") != (every is not None):
            raise ConfigurationError("every= is required for periodic hooks, and only for them")
        if every is not None and every <= 0:
            raise ConfigurationError("every must be positive")

        def register(fn: Callable[[str, int], None]) -> Callable[[str, int], None]:
            self.hooks.append(LifecycleHook(event, fn, topic, every))
            return fn

        return register

    def recurring(
        self,
        job: Task[Any, Any] | str,
        *,
        every: float | None = None,
        cron: str | None = None,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        misfire: str = "once",
        misfire_grace: float = 60.0,
    ) -> Schedule:
        """Enqueue `job` every `every` seconds or per `cron`, once per cluster.

        One running worker of the group leads (see `kafka_jobs.recurring.leader`); each
        fire time is enqueued once, with the job id ``recurring:<name>:<fire ms>``.
        name: the schedule's name (default: the task's name; unique per app).
        timezone: of the cron expression. misfire: fire times later than
        `misfire_grace` seconds (no leader ran): "once" enqueues one job for them,
        "skip" none; later ones within the grace are all enqueued, in order.
        An invalid cron, interval, timezone or policy raises `ConfigurationError`.
        """
        return self.schedules.declare(
            job, every=every, cron=cron, args=args, kwargs=kwargs, name=name,
            timezone=timezone, misfire=misfire, misfire_grace=misfire_grace,
        )  # fmt: skip

    def configure_topic(self, topic: str, **options: Unpack[TopicSettings]) -> None:
        """Set how `topic` is consumed and the failure defaults of its jobs."""
        refuse_unknown(options, TopicSettings, "configure_topic")
        self.topic_options[topic] = TopicOptions.from_settings(options)

    def consumption(self, topic: str) -> TopicOptions:
        """How `topic` is consumed: its options, with flags its tasks set merged in."""
        options = self.topic_options.get(topic) or TopicOptions()
        for task in self.tasks.values():
            flags = task.options.topic_flags
            if task.options.topic != topic or flags is None:
                continue
            if flags.subscription_group and options.subscription_group not in (
                None,
                flags.subscription_group,
            ):
                raise ConfigurationError(
                    f"topic {topic!r} is given two subscription groups by its tasks"
                )
            options = dataclasses.replace(
                options,
                long_running=options.long_running or flags.long_running,
                manual_offsets=options.manual_offsets or flags.manual_offsets,
                subscription_group=options.subscription_group or flags.subscription_group,
                virtual_partitions=options.virtual_partitions or flags.virtual_partitions,
                throttle=options.throttle or flags.throttle,
            )
        return options

    def failure_policy(self, topic: str, task_name: str | None) -> FailurePolicy:
        """Retry policy and dead-letter topic for a record of `task_name` consumed from `topic`."""
        task = self.tasks.get(task_name) if task_name else None
        return resolve(
            topic,
            task.options.retry if task else None,
            task.options.dead_letter_topic if task else None,
            self.topic_options.get(topic),
            task.options.retry_ordering if task else None,
        )

    def task(self, name: str) -> Task[Any, Any]:
        """The registered task called `name`; `UnknownTask` when there is none."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"task {name!r} is not registered in this worker") from None

    def topics(self) -> list[str]:
        """The topics the registered tasks are routed to, sorted."""
        return sorted({task.options.topic for task in self.tasks.values()})

    def dead_letter_topics(self, topics: Iterable[str] | None = None) -> list[str]:
        """The dead-letter topics of `topics` (default: the tasks' topics) and their tasks."""
        found: set[str] = set()
        for topic in self.topics() if topics is None else topics:
            names = [None, *(t.name for t in self.tasks.values() if t.options.topic == topic)]
            for name in names:
                target = self.failure_policy(topic, name).dead_letter_topic
                if target:
                    found.add(target)
        return sorted(found)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every enqueued job is acknowledged; raise `DeliveryError` if any failed."""
        self.producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush pending jobs (raising on failures); release the producer and results reader."""
        settings = self.settings
        release_results(settings)
        self.producer.close(timeout)

    def create_topics(
        self,
        topics: Iterable[str] | None = None,
        partitions: int = 1,
        replication_factor: int = -1,
        timeout: float = 15.0,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        """Create missing topics (default: the registered tasks' topics); returns those created.

        `replication_factor=-1` takes the broker's `default.replication.factor`.
        """
        wanted = list(self.topics() if topics is None else topics)
        invalid = [t for t in wanted if not is_valid_topic_name(t)]
        if invalid:
            raise ConfigurationError(f"invalid topic name(s): {invalid}")
        admin = admin_client(self.settings.admin_settings())
        try:
            return create_missing(admin, wanted, partitions, replication_factor, timeout, config)
        except TopicCreationFailed as exc:
            raise KafkaJobsError(str(exc)) from exc

    def revoke(
        self, job_ids: str | Iterable[str], ttl: float | None = None, *, terminate: bool = False
    ) -> int:
        """Revoke jobs: any that has not started yet is skipped by every worker.

        The revocation lasts `ttl` seconds (default `revoke_ttl`) and reaches
        delayed jobs too; unknown ids are harmless. Returns how many were written.
        terminate: also end a running one like a hard time limit (`JobTerminated`;
        settled as revoked, never retried).
        """
        from kafka_jobs.revocations import revoke

        ids = [job_ids] if isinstance(job_ids, str) else job_ids
        return revoke(self, ids, ttl, terminate)

    def assignments(self) -> dict[str, list[int]]:
        """Topic -> partitions this process's running workers own right now.

        Updated on every rebalance; any thread may call it (a snapshot). For
        schedulers that share workers by what is actually assigned.
        """
        owned: dict[str, set[int]] = {}
        for worker in list(self._workers):
            for listener in worker.listeners:
                for topic, partition in list(listener.states):
                    owned.setdefault(topic, set()).add(partition)
        return {topic: sorted(partitions) for topic, partitions in sorted(owned.items())}

    def delay_topics(self) -> list[str]:
        """The topics delayed jobs wait in: the tiers and the cancellations."""
        prefix = self.settings.delay_topic_prefix
        return [*tier_topics(prefix), cancel_topic(prefix)]

    def attach(self, worker: Worker) -> None:
        """Count a worker of this app in `assignments()` while it lives (weakly held)."""
        self._workers.add(worker)

    def worker(self, **options: Unpack[WorkerOptions]) -> Worker:
        """A worker for this app; see `kafka_jobs.worker.Worker` for the options."""
        from kafka_jobs.worker.runner import Worker

        return Worker(self, **options)


_default_app: App | None = None
_default_lock = threading.Lock()


def default_app() -> App:
    """The process-wide app configured from the environment, created on first use."""
    global _default_app
    if _default_app is None:
        with _default_lock:
            if _default_app is None:
                _default_app = App()
    return _default_app


loader.recognise(App, default_app)  # `-A` specs find Apps without the loader importing this


@overload
def kafka_job(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def kafka_job(
    *, app: App | None = None, **options: Unpack[JobOptions]
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def kafka_job(
    fn: Callable[P, R] | None = None, /, *, app: App | None = None, **options: Unpack[JobOptions]
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function as a Kafka job of `app` (default: the environment's app).

    `@kafka_job(topic="orders", key="order_id", retries=3)` routes calls to the topic
    `orders` with the value of the `order_id` argument as partition key, and retries
    a failed run three times before the record goes to `orders.dlq`. All options:
    `kafka_jobs.options.JobOptions`.
    """
    target = app or default_app()
    if fn is not None:
        return target.job(fn)
    return target.job(**options)


def flush(timeout: float | None = None) -> None:
    """Flush the default app's producer; raise `DeliveryError` if any job failed to deliver."""
    default_app().flush(timeout)


def result(job_id: str, app: App | None = None, *, since_ms: int | None = None) -> JobResult:
    """The result handle of `job_id` (e.g. a web request polling a job started elsewhere).

    app: whose cluster and results topic (default: the default app).
    since_ms: when the job was enqueued, if known (reads less); else the whole topic.
    """
    app = app or default_app()
    return JobResult(job_id, functools.partial(reader_of, app.settings), since_ms, app.secret)
