"""Per-job and per-topic options, and how they combine into one failure policy."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

from kafka_jobs import deadletter
from kafka_jobs.errors import ConfigurationError
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.processing.limits import Throttle, ThrottleSetting, parse_throttle
from kafka_jobs.processing.retry import RetryOrdering, RetryPolicy, check_ordering
from kafka_jobs.processing.timelimits import TimeLimits

KeySpec = str | Callable[..., object] | None
"""An argument name, or a callable of the call's arguments, giving the partition key."""

DeadLetterSetting = str | Literal[False] | None
"""A topic name, False for none, None to inherit (finally `<topic>.dlq`)."""


class RetryOptions(TypedDict, total=False):
    """Retry and dead-letter keywords shared by `@kafka_job` and `App.configure_topic`.

    retries: further attempts after a failed run (default 0).
    backoff / backoff_max: first delay and cap in seconds (doubling, with jitter).
    retry_on / give_up_on: exception classes retried / never retried.
    dead_letter_topic: where records go after the last attempt; False disables.
    retry_ordering: "strict" pauses the partition for every retry (per-key order
        kept); "relaxed" re-enqueues retries that wait longer than the
        `retry_pause_max` setting (default: the app's `retry_ordering`).
    """

    retries: int
    backoff: float
    backoff_max: float
    retry_on: tuple[type[BaseException], ...]
    give_up_on: tuple[type[BaseException], ...]
    dead_letter_topic: DeadLetterSetting
    retry_ordering: RetryOrdering


class TopicSettings(RetryOptions, total=False):
    """Keywords of `App.configure_topic` (and, for their topic, of `@kafka_job`).

    long_running: pause the partition while its batch runs and keep polling, so a
        job may take longer than `max.poll.interval.ms`.
    manual_offsets: records count as done only when the job calls
        `current_job().mark_as_consumed()`.
    subscription_group: name of the consumer connection the topic is read on.
    virtual_partitions: split each partition's batch into parallel lanes by key
        (True for the defaults, or a `VirtualPartitions`).
    partitions / replication_factor / config: what the topic should be, for
        `kafka-jobs topics plan | migrate` (kafka_jobs.declarative).
    throttle: at most `limit` jobs per `interval` seconds per partition, a
        `Throttle` or `(limit, interval_seconds)`; the partition pauses while over.
    soft_time_limit: seconds after which `SoftTimeLimitExceeded` is raised in the job.
    time_limit: seconds after which the job is ended (failed with reason
        ``time-limit``); 0 for either: none, even if the app sets one.
    """

    long_running: bool
    manual_offsets: bool
    subscription_group: str
    virtual_partitions: VirtualPartitions | bool
    partitions: int
    replication_factor: int
    config: Mapping[str, str]
    throttle: ThrottleSetting
    soft_time_limit: float
    time_limit: float


class JobOptions(TopicSettings, total=False):
    """Keywords of `@kafka_job` / `App.job`.

    topic: the topic the job's records go to (default: the app's default topic).
    key: argument name (or callable of the call's arguments) giving the partition key.
    name: registered name (default `module.qualname`).
    serializer: "json" (default) or "dill" (signed; needs a signing secret).
    keep_result: write each job's outcome to the results topic, so that its handle's
        `get()` returns the value (default: the app's `keep_result`, False).
    expires: seconds after enqueue past which a job is not started (expired).
    rate_limit: at most this many starts per worker: "100/s", "10/m", "1000/h",
        or a number per second (see `kafka_jobs.processing.limits`).
    """

    topic: str
    key: KeySpec
    name: str
    serializer: Literal["json", "dill"]
    keep_result: bool
    expires: float
    rate_limit: str | float


class _DeclaresKeys(Protocol):
    """A TypedDict class, as far as `refuse_unknown` reads it."""

    __required_keys__: frozenset[str]
    __optional_keys__: frozenset[str]


def refuse_unknown(given: Mapping[str, object], accepted: _DeclaresKeys, where: str) -> None:
    """Raise `ConfigurationError` for keywords `accepted` (a TypedDict) does not declare.

    A misspelt option (`retires=3`) must not be dropped silently.
    """
    known = accepted.__required_keys__ | accepted.__optional_keys__
    unknown = sorted(set(given) - known)
    if unknown:
        hints = [
            f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
            for name in unknown
            for close in [difflib.get_close_matches(name, known, n=1)]
        ]
        raise ConfigurationError(f"{where}: unknown option {', '.join(hints)}")


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def is_valid_topic_name(name: str) -> bool:
    """Kafka's rule for topic names (some brokers accept more; Apache Kafka does not)."""
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in (".", "..")


_RETRY_FIELDS = ("retries", "backoff", "backoff_max", "retry_on", "give_up_on")


def ordering_option(value: object) -> RetryOrdering | None:
    """A `retry_ordering` keyword checked (None: not given); `ConfigurationError` if invalid."""
    return None if value is None else check_ordering(value)


def retry_policy(options: RetryOptions) -> RetryPolicy | None:
    """The retry policy the options ask for, or None when they name no retry setting."""
    given = {name: options[name] for name in _RETRY_FIELDS if name in options}  # type: ignore[literal-required]
    return RetryPolicy(**given) if given else None


@dataclass(frozen=True, slots=True)
class TopicOptions:
    """Defaults for every job consumed from one topic, and how the topic is consumed."""

    retry: RetryPolicy | None = None
    dead_letter_topic: DeadLetterSetting = None
    long_running: bool = False
    manual_offsets: bool = False
    subscription_group: str | None = None
    virtual_partitions: VirtualPartitions | None = None
    partitions: int | None = None
    replication_factor: int | None = None
    config: Mapping[str, str] | None = None
    throttle: Throttle | None = None
    retry_ordering: RetryOrdering | None = None
    time_limits: TimeLimits | None = None

    def __post_init__(self) -> None:
        if self.retry_ordering is not None:
            check_ordering(self.retry_ordering)
        if self.partitions is not None and self.partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, not {self.partitions}")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise ConfigurationError(
                f"replication_factor must be at least 1, not {self.replication_factor}"
            )
        for name, value in (self.config or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ConfigurationError(f"topic config {name!r}: names and values are strings")

    @classmethod
    def from_settings(cls, options: TopicSettings) -> TopicOptions:
        """Topic options from `configure_topic` / `@kafka_job` keywords."""
        config = options.get("config")
        return cls(
            retry=retry_policy(options),
            dead_letter_topic=options.get("dead_letter_topic"),
            long_running=options.get("long_running", False),
            manual_offsets=options.get("manual_offsets", False),
            subscription_group=options.get("subscription_group"),
            virtual_partitions=_virtual_partitions(options.get("virtual_partitions")),
            partitions=options.get("partitions"),
            replication_factor=options.get("replication_factor"),
            config=None if config is None else dict(config),
            throttle=parse_throttle(options.get("throttle")),
            retry_ordering=options.get("retry_ordering"),
            time_limits=time_limits_option(options),
        )


def time_limits_option(options: TopicSettings) -> TimeLimits | None:
    """The time limits the keywords give (None: neither); `ConfigurationError` if invalid."""
    return TimeLimits.of(options.get("soft_time_limit"), options.get("time_limit"), "time limits")


def _virtual_partitions(setting: VirtualPartitions | bool | None) -> VirtualPartitions | None:
    if setting is True:
        return VirtualPartitions()
    return setting or None


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What to do with a failed record of one task on one topic."""

    retry: RetryPolicy
    dead_letter_topic: str | None
    ordering: RetryOrdering | None = None
    """None: the worker's `retry_ordering` setting."""


def resolve(
    topic: str,
    task_retry: RetryPolicy | None,
    task_dead_letter: DeadLetterSetting,
    topic_options: TopicOptions | None,
    task_ordering: RetryOrdering | None = None,
) -> FailurePolicy:
    """Job options win over topic options, which win over the defaults."""
    topic_options = topic_options or TopicOptions()
    retry = task_retry or topic_options.retry or RetryPolicy()
    setting = task_dead_letter if task_dead_letter is not None else topic_options.dead_letter_topic
    if setting is None:
        dead_letter: str | None = deadletter.default_topic(topic)
    else:
        dead_letter = setting or None
    ordering = task_ordering or topic_options.retry_ordering
    return FailurePolicy(retry, dead_letter, ordering)
