"""Worker and producer settings, and how they are read from the environment.

Every field can be given to `App(...)` as a keyword or set through an
environment variable (see `ENV_VARIABLES`). librdkafka settings pass through
untouched: `KAFKA_JOBS_KAFKA_<NAME>` applies to every client,
`KAFKA_JOBS_PRODUCER_<NAME>` and `KAFKA_JOBS_CONSUMER_<NAME>` to one kind,
where `<NAME>` is the librdkafka key upper-cased with dots as underscores
(`KAFKA_JOBS_CONSUMER_SESSION_TIMEOUT_MS=6000` sets `session.timeout.ms`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_jobs.errors import ConfigurationError
from kafka_jobs.processing.retry import check_ordering, check_pause_max
from kafka_jobs.processing.timelimits import check_limits

ConfigValue = str | int | float | bool | Callable[..., object] | logging.Logger
"""The value of one librdkafka client setting, as confluent_kafka's clients take it.

Scalars, callbacks (`error_cb`, `stats_cb`, `throttle_cb`, `oauth_cb`, `on_commit`,
`on_delivery`, ...) and the Python client's own `logger`.
"""

ClientConfig = dict[str, ConfigValue]
"""A librdkafka client configuration, as the clients' constructors take it."""

KafkaConfig = Mapping[str, ConfigValue]
"""Client settings given by users (`Settings.kafka_config` and the like)."""

POOLS = ("threads", "processes")
"""Where a worker runs sync jobs (`Settings.pool`)."""

DEFAULT_DELAY_TOPIC_PREFIX = "kafka-jobs.delay"
"""`Settings.delay_topic_prefix` by default (the Celery bridge's default too)."""

GROUP_PROTOCOLS = ("classic", "consumer")
"""Consumer group protocols: `consumer` is KIP-848's, where the broker assigns partitions."""

# Under KIP-848 these are the broker's (group.consumer.*): librdkafka refuses them.
_CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")


def int_setting(conf: KafkaConfig, key: str, default: int) -> int:
    """`conf[key]` as a number (librdkafka takes numbers as text too), else `default`."""
    value = conf.get(key, default)
    if isinstance(value, str | int | float):
        return int(value)
    raise TypeError(f"{key} must be a number, not {value!r}")


def callback_setting(conf: KafkaConfig, key: str) -> Callable[..., object] | None:
    """The callback `conf[key]` (such as `stats_cb`), or None when not set."""
    value = conf.get(key)
    if value is None or callable(value):
        return value
    raise TypeError(f"{key} must be callable, not {value!r}")


def apply_group_protocol(conf: ClientConfig, protocol: str) -> ClientConfig:
    """`conf` for `protocol` (a `group.protocol` already in `conf` wins).

    With `consumer`, the classic protocol's client-side settings are dropped: the
    broker decides session timeouts, heartbeats and assignment.
    """
    chosen = str(conf.get("group.protocol", protocol)).lower()
    if chosen not in GROUP_PROTOCOLS:
        raise ConfigurationError(
            f"group protocol must be one of {', '.join(GROUP_PROTOCOLS)}, not {chosen!r}"
        )
    if chosen == "consumer":
        conf = {k: v for k, v in conf.items() if k not in _CLASSIC_ONLY}
        conf["group.protocol"] = "consumer"
    return conf


@dataclass(frozen=True, slots=True)
class Settings:
    """Immutable configuration of an `App`.

    bootstrap_servers: comma-separated `host:port` list of the Kafka cluster.
    group_id: consumer group of the worker.
    default_topic: topic of jobs declared without one.
    concurrency: worker threads per worker process.
    batch_size: most records taken per poll (librdkafka has no `max.poll.records`).
    poll_timeout: seconds one poll may wait for records; bounds how fast the
        listener reacts to finished jobs, rebalances and shutdown.
    commit_interval: seconds between asynchronous offset commits while running;
        revocation and shutdown always commit synchronously.
    shutdown_timeout: seconds a stopping worker waits for in-flight jobs.
    delivery_timeout: seconds the producer tries to deliver a job before it
        reports the delivery as failed (librdkafka `message.timeout.ms`).
    max_payload_bytes: largest encoded job accepted at enqueue and at consume.
    tick_interval: seconds between scheduler ticks when no job finishes.
    adaptive_batch: shrink batches of regular topics when measured job times
        would exceed `max.poll.interval.ms` (and grow them back when fast).
    signing_secret: HMAC key for signed (dill) payloads; workers without it
        dead-letter such payloads unread.
    delay_topic_prefix: delayed jobs wait in `<prefix>.<N>s` tier topics.
    scheduler: "module:Class" of the workers' scheduler (default FIFO).
    pool: where sync jobs run: "threads" (default) or "processes" (one child
        process per worker thread, for CPU-bound jobs).
    async_concurrency: most `async def` jobs in flight per worker process.
    pattern_refresh_interval: seconds between checks for new topics matching a
        worker's topic pattern.
    summary_interval: seconds between the summary lines `Worker.run()` logs
        (jobs/s, failures, lag); 0 turns them off.
    status_topic: compacted topic where running workers publish their state
        (read by `kafka-jobs status` and the dashboard).
    status_interval: seconds between those publications by `Worker.run()`; 0: never.
    keep_result: default of every job's `keep_result` (write its outcome to
        `results_topic`, for `handle.get()`).
    results_topic: compacted topic of job outcomes, created by workers.
    results_partitions: partitions of the results topic when a worker creates it.
    result_ttl: seconds outcomes are kept (the topic's retention when created).
    revoke_topic: compacted topic of revocations (`App.revoke`), followed by workers.
    revoke_ttl: seconds a revocation stays in force (and the topic's retention).
    dead_letter_expired: dead-letter jobs that expired before they started (with
        reason ``expired``) instead of only counting and logging them.
    canvas_transactions: a chain's next step (a chord member's join) and the
        finished record's offset commit in one Kafka transaction, when the broker
        accepts transactions (tried once per worker process) and the topic has
        neither virtual partitions nor manual offsets; see `kafka_jobs.canvas.worker`.
    retry_ordering: default of every job's `retry_ordering`: "relaxed" (retries
        waiting longer than `retry_pause_max` are re-enqueued through the delay
        tiers, the partition goes on) or "strict" (the partition pauses).
    retry_pause_max: seconds; shorter retry waits pause the partition, longer ones
        are re-enqueued (with `retry_ordering="relaxed"`).
    soft_time_limit / time_limit: seconds a job may run before `SoftTimeLimitExceeded`
        is raised in it / before it is ended; 0 (default): none. Defaults of every
        job; a topic's and a job's own limits win.
    group_protocol: "classic" (default) or "consumer" (KIP-848: the broker assigns
        partitions and owns session timeouts; Apache Kafka 4.0+).
    kafka_config: librdkafka settings for every client (SASL/SSL go here).
    producer_config: librdkafka settings for the producer only.
    consumer_config: librdkafka settings for consumers only.
    """

    bootstrap_servers: str = "localhost:9092"
    group_id: str = "kafka-jobs"
    default_topic: str = "kafka-jobs"
    concurrency: int = 4
    batch_size: int = 1000
    poll_timeout: float = 0.1
    commit_interval: float = 1.0
    shutdown_timeout: float = 30.0
    delivery_timeout: float = 30.0
    max_payload_bytes: int = 1_000_000
    tick_interval: float = 5.0
    adaptive_batch: bool = False
    signing_secret: str | None = field(default=None, repr=False)
    delay_topic_prefix: str = DEFAULT_DELAY_TOPIC_PREFIX
    scheduler: str | None = None
    pool: str = "threads"
    async_concurrency: int = 100
    pattern_refresh_interval: float = 10.0
    summary_interval: float = 30.0
    status_topic: str = "kafka-jobs.status"
    status_interval: float = 5.0
    keep_result: bool = False
    results_topic: str = "kafka-jobs.results"
    results_partitions: int = 6
    result_ttl: float = 86_400.0
    revoke_topic: str = "kafka-jobs.revoked"
    revoke_ttl: float = 86_400.0
    dead_letter_expired: bool = False
    canvas_transactions: bool = False
    retry_ordering: str = "relaxed"
    retry_pause_max: float = 1.0
    soft_time_limit: float = 0.0
    time_limit: float = 0.0
    group_protocol: str = "classic"
    kafka_config: KafkaConfig = field(default_factory=dict)
    producer_config: KafkaConfig = field(default_factory=dict)
    consumer_config: KafkaConfig = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConfigurationError(f"pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        for name in (
            "concurrency",
            "batch_size",
            "max_payload_bytes",
            "async_concurrency",
            "results_partitions",
        ):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        for name in (
            "poll_timeout",
            "commit_interval",
            "delivery_timeout",
            "tick_interval",
            "pattern_refresh_interval",
            "result_ttl",
            "revoke_ttl",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be positive (and finite)")
        for name in ("summary_interval", "status_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"{name} must not be negative (and finite)")
        if not math.isfinite(self.shutdown_timeout) or self.shutdown_timeout < 0:
            raise ConfigurationError("shutdown_timeout must not be negative (and finite)")
        check_ordering(self.retry_ordering)
        check_pause_max(self.retry_pause_max)
        check_limits(self.soft_time_limit, self.time_limit, "settings")
        self.consumer_settings()  # fail now, not when a worker starts

    def replace(self, **changes: Any) -> Settings:  # each field's own type
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def producer_settings(self) -> ClientConfig:
        """The librdkafka configuration of the job producer."""
        conf: ClientConfig = {
            "bootstrap.servers": self.bootstrap_servers,
            # Batching is what makes enqueue fast; a few ms of linger is invisible to users.
            "linger.ms": 5,
            "enable.idempotence": True,
            "message.timeout.ms": int(self.delivery_timeout * 1000),
        }
        conf.update(self.kafka_config)
        conf.update(self.producer_config)
        return conf

    def consumer_settings(self, group_id: str | None = None) -> ClientConfig:
        """The librdkafka configuration of a worker's consumer."""
        conf: ClientConfig = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group_id or self.group_id,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        }
        conf.update(self.kafka_config)
        conf.update(self.consumer_config)
        conf = apply_group_protocol(conf, self.group_protocol)
        refuse_auto_commit(conf)
        return conf

    def admin_settings(self) -> ClientConfig:
        """The librdkafka configuration of an admin client."""
        conf: ClientConfig = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka_config)
        return conf

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables, then `overrides` on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}  # each field's own type: Settings(**values) takes them
        for name, variable in ENV_VARIABLES.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, variable, raw)
        values.update(client_configs_from_env(env))
        values.update(overrides)
        return cls(**values)


# Offsets are committed by the listener only after the jobs ran: never by librdkafka.
_CONSUMER_INVARIANTS = {"enable.auto.commit": False, "enable.auto.offset.store": False}

ENV_VARIABLES: dict[str, str] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "group_id": "KAFKA_JOBS_GROUP_ID",
    "default_topic": "KAFKA_JOBS_DEFAULT_TOPIC",
    "concurrency": "KAFKA_JOBS_CONCURRENCY",
    "batch_size": "KAFKA_JOBS_BATCH_SIZE",
    "poll_timeout": "KAFKA_JOBS_POLL_TIMEOUT",
    "commit_interval": "KAFKA_JOBS_COMMIT_INTERVAL",
    "shutdown_timeout": "KAFKA_JOBS_SHUTDOWN_TIMEOUT",
    "delivery_timeout": "KAFKA_JOBS_DELIVERY_TIMEOUT",
    "max_payload_bytes": "KAFKA_JOBS_MAX_PAYLOAD_BYTES",
    "tick_interval": "KAFKA_JOBS_TICK_INTERVAL",
    "adaptive_batch": "KAFKA_JOBS_ADAPTIVE_BATCH",
    "signing_secret": "KAFKA_JOBS_SIGNING_SECRET",
    "delay_topic_prefix": "KAFKA_JOBS_DELAY_TOPIC_PREFIX",
    "scheduler": "KAFKA_JOBS_SCHEDULER",
    "pool": "KAFKA_JOBS_POOL",
    "async_concurrency": "KAFKA_JOBS_ASYNC_CONCURRENCY",
    "pattern_refresh_interval": "KAFKA_JOBS_PATTERN_REFRESH_INTERVAL",
    "summary_interval": "KAFKA_JOBS_SUMMARY_INTERVAL",
    "status_topic": "KAFKA_JOBS_STATUS_TOPIC",
    "status_interval": "KAFKA_JOBS_STATUS_INTERVAL",
    "keep_result": "KAFKA_JOBS_KEEP_RESULT",
    "results_topic": "KAFKA_JOBS_RESULTS_TOPIC",
    "results_partitions": "KAFKA_JOBS_RESULTS_PARTITIONS",
    "result_ttl": "KAFKA_JOBS_RESULT_TTL",
    "revoke_topic": "KAFKA_JOBS_REVOKE_TOPIC",
    "revoke_ttl": "KAFKA_JOBS_REVOKE_TTL",
    "dead_letter_expired": "KAFKA_JOBS_DEAD_LETTER_EXPIRED",
    "canvas_transactions": "KAFKA_JOBS_CANVAS_TRANSACTIONS",
    "retry_ordering": "KAFKA_JOBS_RETRY_ORDERING",
    "retry_pause_max": "KAFKA_JOBS_RETRY_PAUSE_MAX",
    "soft_time_limit": "KAFKA_JOBS_SOFT_TIME_LIMIT",
    "time_limit": "KAFKA_JOBS_TIME_LIMIT",
    "group_protocol": "KAFKA_JOBS_GROUP_PROTOCOL",
}

_CLIENT_PREFIXES = {
    "kafka_config": "KAFKA_JOBS_KAFKA_",
    "producer_config": "KAFKA_JOBS_PRODUCER_",
    "consumer_config": "KAFKA_JOBS_CONSUMER_",
}


def config_key(config: KafkaConfig) -> tuple[tuple[str, str], ...]:
    """A hashable key of a client configuration (for one client per configuration)."""
    return tuple(sorted((k, str(v)) for k, v in config.items()))


def refuse_auto_commit(conf: ClientConfig) -> None:
    """Turn librdkafka's own offset commits off in `conf`; refuse a setting that turns them on.

    kafka-jobs (and the Celery bridge) commit offsets only below unfinished work.
    """
    for key, value in _CONSUMER_INVARIANTS.items():
        if key in conf and str(conf[key]).lower() != str(value).lower():
            raise ConfigurationError(
                f"{key}={conf[key]!r} would commit offsets of jobs that have not run;"
                " kafka-jobs commits them itself"
            )
        conf[key] = value


def client_configs_from_env(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Client settings from the environment, per role.

    `KAFKA_JOBS_KAFKA_*`, `KAFKA_JOBS_PRODUCER_*` and `KAFKA_JOBS_CONSUMER_*` become
    `kafka_config`, `producer_config` and `consumer_config` (librdkafka names).

    Shared by the worker and the Celery bridge, so one environment configures both.
    """
    return {
        name: {
            key[len(prefix) :].lower().replace("_", "."): raw
            for key, raw in environ.items()
            if key.startswith(prefix) and len(key) > len(prefix)
        }
        for name, prefix in _CLIENT_PREFIXES.items()
    }


def _parse(name: str, variable: str, raw: str) -> int | float | bool | str:
    kind = Settings.__dataclass_fields__[name].type
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigurationError(f"{variable}={raw!r} is not a valid {kind}") from None
    return raw
