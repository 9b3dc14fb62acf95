"""Transport options (Celery's ``broker_transport_options``) and the client settings they give."""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kafka_jobs.settings import (
    DEFAULT_DELAY_TOPIC_PREFIX,
    ClientConfig,
    KafkaConfig,
    apply_group_protocol,
    client_configs_from_env,
    refuse_auto_commit,
)

DEFAULT_PORT = 9092

GROUP_TIMEOUTS: ClientConfig = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}
"""The bridge's default group timeouts (classic protocol; KIP-848 groups take the broker's)."""

BROADCAST_FETCH_WAIT_MS = 20
"""Default `fetch.wait.max.ms` of broadcast readers (remote control, replies, events).

Apache Kafka answers a fetch as soon as a record arrives, whatever the wait; the
embedded broker (Tansu) answers when the wait ends, so each remote-control hop waits
up to this long there (an inspect round trip: 52 ms at 100, 11.5 ms at 20, 7 ms at
10). The price is idle fetches: 1000 / wait per reader and second (at 20: about 3%
of a core in the embedded broker per reader, 0.6% in the reader's process).
"""

# kombu's URL parser does not accept "h1:9092,h2:9092"; its failover list
# ("kafkajobs://h1:9092;kafkajobs://h2:9092" or "...;h2:9092") carries every host.
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    """What the transport reads from ``broker_transport_options`` (defaults in brackets).

    group_id: consumer group shared by the workers of one app ["celery"].
    topic_partitions: partitions of a queue topic created on declare [6].
    replication_factor: of topics created on declare [-1: the broker's
        default.replication.factor].
    dead_letter_topic: where rejected and unreadable records go; ``{queue}`` is
        replaced by the queue name; None drops them (logged) ["{queue}.dlq"].
    confirm_publish: wait for the broker's acknowledgement on every publish [False].
    buffer_size: records fetched ahead per consumer before its partitions are
        paused (at least the channel's prefetch count) [10 000]. Large on purpose:
        a resumed partition's next records take a fetch round (up to a second on
        some brokers), so the buffer must outlast it.
    commit_interval: seconds between asynchronous offset commits [1.0].
    poll_timeout: seconds one poll of the polling thread may block [0.1].
    delivery_timeout: seconds the producer tries before a publish fails [30.0].
    max_message_bytes: larger bodies are refused at publish [1 000 000].
    connect_timeout: seconds a new connection waits for a broker to answer [10.0].
    broadcast_retention: seconds exchange topics (broadcasts, replies) keep records,
        set when the transport creates them [3600].
    broadcast_fetch_wait_ms: `fetch.wait.max.ms` of the readers of broadcasts and
        replies; lower answers remote control sooner on brokers that hold a fetch
        for its whole wait, at the cost of more idle fetches [20].
    eta_threshold: a task whose eta is more than this many seconds away waits in
        the delay tier topics, not in the worker's memory (see `celery_bridge.eta`);
        None publishes every task to its queue as kombu's brokers do [10.0].
    purge_topic: compacted topic of purge marks, followed by every worker
        (see `celery_bridge.purges`) ["celery-bridge.purges"].
    revoke_topic: compacted topic of revocations shared with kafka-jobs, where a
        Celery ``revoke`` to every worker is kept (see `celery_bridge.revoking`)
        [KAFKA_JOBS_REVOKE_TOPIC, else "kafka-jobs.revoked"].
    revoke_ttl: seconds such a revocation stays in force, and the topic's retention
        when the bridge creates it [KAFKA_JOBS_REVOKE_TTL, else 86 400].
    delay_topic_prefix: prefix of those topics and of their dispatcher group, shared
        with kafka-jobs workers [KAFKA_JOBS_DELAY_TOPIC_PREFIX, else "kafka-jobs.delay"].
    bootstrap_servers: overrides the hosts of the URL.
    group_protocol: "classic" or "consumer" (KIP-848) [KAFKA_JOBS_GROUP_PROTOCOL,
        else "classic"].
    kafka_config: librdkafka settings for every client (SASL/SSL go here).
    producer_config / consumer_config / admin_config: for one kind of client only.
    """

    bootstrap_servers: str = ""
    group_id: str = "celery"
    topic_partitions: int = 6
    replication_factor: int = -1
    dead_letter_topic: str | None = "{queue}.dlq"
    confirm_publish: bool = False
    buffer_size: int = 10_000
    commit_interval: float = 1.0
    poll_timeout: float = 0.1
    delivery_timeout: float = 30.0
    max_message_bytes: int = 1_000_000
    connect_timeout: float = 10.0
    broadcast_retention: float = 3600.0
    broadcast_fetch_wait_ms: int = BROADCAST_FETCH_WAIT_MS
    eta_threshold: float | None = 10.0
    purge_topic: str = "celery-bridge.purges"
    revoke_topic: str = field(
        default_factory=lambda: os.environ.get("KAFKA_JOBS_REVOKE_TOPIC") or "kafka-jobs.revoked"
    )
    revoke_ttl: float = field(
        default_factory=lambda: float(os.environ.get("KAFKA_JOBS_REVOKE_TTL") or 86_400.0)
    )
    delay_topic_prefix: str = field(
        default_factory=lambda: (
            os.environ.get("KAFKA_JOBS_DELAY_TOPIC_PREFIX") or DEFAULT_DELAY_TOPIC_PREFIX
        )
    )
    group_protocol: str = field(
        default_factory=lambda: os.environ.get("KAFKA_JOBS_GROUP_PROTOCOL") or "classic"
    )
    kafka_config: KafkaConfig = field(default_factory=dict)
    producer_config: KafkaConfig = field(default_factory=dict)
    consumer_config: KafkaConfig = field(default_factory=dict)
    admin_config: KafkaConfig = field(default_factory=dict)

    @classmethod
    def from_transport_options(
        cls, options: Mapping[str, object], hosts: list[str] | None = None
    ) -> BridgeOptions:
        """Options from kombu's transport options; unknown keys (kombu's own) are ignored."""
        known = {f.name for f in fields(cls)}
        # kombu hands the user's options over unchecked: each field's own type, by name.
        values: dict[str, Any] = {k: v for k, v in options.items() if k in known}
        # The worker's environment configures the bridge too; transport options win.
        for name, from_env in client_configs_from_env(os.environ).items():
            values[name] = {**from_env, **values.get(name, {})}
        if not values.get("bootstrap_servers"):
            values["bootstrap_servers"] = ",".join(hosts or []) or os.environ.get(
                "KAFKA_BOOTSTRAP_SERVERS", f"localhost:{DEFAULT_PORT}"
            )
        made = cls(**values)
        if made.broadcast_fetch_wait_ms < 1:
            raise ValueError("broadcast_fetch_wait_ms must be at least 1")
        if made.topic_partitions < 1 or made.buffer_size < 1:
            raise ValueError("topic_partitions and buffer_size must be at least 1")
        if not (math.isfinite(made.revoke_ttl) and made.revoke_ttl > 0):
            raise ValueError(
                f"revoke_ttl must be a positive number of seconds, not {made.revoke_ttl}"
            )
        threshold = made.eta_threshold
        if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"eta_threshold must be None or a finite number >= 0, not {threshold}")
        return made

    def _layered(self, defaults: KafkaConfig, specific: KafkaConfig) -> ClientConfig:
        # built-in defaults < kafka_config < the client kind's own config (as in Settings)
        conf: ClientConfig = {"bootstrap.servers": self.bootstrap_servers, **defaults}
        conf.update(self.kafka_config)
        conf.update(specific)
        return conf

    def producer_settings(self) -> ClientConfig:
        """Librdkafka settings of the publishing producer (batched: linger of a few ms)."""
        defaults: ClientConfig = {
            "linger.ms": 5,
            "enable.idempotence": True,
            "message.timeout.ms": int(self.delivery_timeout * 1000),
        }
        return self._layered(defaults, self.producer_config)

    def consumer_settings(self, group_id: str | None) -> ClientConfig:
        """Settings of a queue consumer (`group_id`) or a broadcast reader (None)."""
        defaults: ClientConfig = {
            "auto.offset.reset": "earliest" if group_id else "latest",
            "partition.assignment.strategy": "cooperative-sticky",
            # Celery's worker start-up expects to consume within seconds (its test
            # worker pings within 10 s); some brokers form a group only after half
            # the session timeout, so the bridge uses Kafka's pre-3.0 10 s, not 45 s.
            **GROUP_TIMEOUTS,
        }
        if not group_id:
            # Broadcasts carry remote control and its replies: a broker that answers a
            # fetch only when its wait ends (the embedded one) would delay each hop by
            # up to 500 ms (librdkafka's default). See BROADCAST_FETCH_WAIT_MS.
            defaults["fetch.wait.max.ms"] = self.broadcast_fetch_wait_ms
        else:
            # How far a partition with nothing new was fetched (Transport.settle).
            defaults["enable.partition.eof"] = True
        conf = self._layered(defaults, self.consumer_config)
        if group_id:  # a broadcast reader assigns its partitions itself: no group protocol
            conf = apply_group_protocol(conf, self.group_protocol)
        # Offsets are committed by the transport, and only below unacked messages.
        refuse_auto_commit(conf)
        # A broadcast reader assigns partitions itself and never commits; librdkafka
        # still wants a group id.
        conf["group.id"] = group_id or f"celery-bridge-reader-{uuid.uuid4().hex}"
        return conf

    def admin_settings(self) -> ClientConfig:
        """Settings of the admin client that creates topics."""
        return self._layered({}, self.admin_config)

    def dead_letter_topic_of(self, queue: str) -> str | None:
        """The dead-letter topic of `queue`, or None when dead letters are dropped."""
        return (
            None if self.dead_letter_topic is None else self.dead_letter_topic.format(queue=queue)
        )


def hosts_of(hostname: str | None, port: int | None, alternates: list[str]) -> list[str]:
    """``host:port`` of the URL and of each failover alternate."""
    found: list[str] = []
    if hostname:
        found.append(f"{hostname}:{port or DEFAULT_PORT}")
    for alt in alternates[1:]:  # alternates[0] is the URL itself
        rest = _SCHEME.sub("", alt).split("/", 1)[0].rsplit("@", 1)[-1]
        if rest:
            found.append(rest if ":" in rest else f"{rest}:{DEFAULT_PORT}")
    return found
