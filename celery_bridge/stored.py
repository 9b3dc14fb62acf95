"""Celery results as records of a compacted Kafka topic: the record format and its options.

One record per write of Celery's key-value backend protocol. The record key is
Celery's key (``celery-task-meta-<task id>``, ``celery-taskset-meta-<group id>``),
its partition `partition_of(key)`, so a reader of one key reads one partition.
The value is Celery's own encoded payload, unchanged (any result serializer);
two headers let readers judge a record without decoding it:

- ``celery-status``: the task state (a saved group is ``SUCCESS``);
- ``kafkajobs-expires-ms``: when it expires (epoch milliseconds; absent: never).

An empty value is a tombstone: ``forget()`` and group deletion write one, and
compaction later drops the key. A ``SUCCESS`` is never replaced by a later state
of the same key (a re-run after a lost ack), as Celery's key-value backends refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from celery import states  # type: ignore[import-untyped]
from confluent_kafka import Message

from kafka_jobs.results.reader import Decoded
from kafka_jobs.wire import now_ms

STATUS_HEADER = "celery-status"
EXPIRES_HEADER = "kafkajobs-expires-ms"
DEFAULT_TOPIC = "celery-bridge.results"
DEFAULT_PARTITIONS = 6
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Stored:
    """One key's latest record as read: Celery's encoded payload, its state, its expiry."""

    payload: bytes
    status: str
    expires_ms: int = 0
    """Epoch milliseconds after which the key reads as absent (0: never)."""

    def expired(self, at_ms: int | None = None) -> bool:
        """True once its expiry passed (at `at_ms`, default now)."""
        return bool(self.expires_ms) and (now_ms() if at_ms is None else at_ms) >= self.expires_ms


class StoredFormat:
    """How the results reader reads Celery result records (see the module docstring)."""

    name = "celery"

    def decode(self, message: Message) -> Decoded[Stored] | None:
        """The key and its record; a tombstone forgets the key. Keyless records are skipped."""
        raw_key = message.key()
        if not raw_key:
            return None
        key = text(raw_key)
        value = message.value()
        if not value:
            return Decoded(key, None)
        headers = dict(message.headers() or [])
        status = headers.get(STATUS_HEADER)
        if not status:
            raise ValueError(f"result record {key!r} has no {STATUS_HEADER} header")
        expires = headers.get(EXPIRES_HEADER)
        try:
            expires_ms = int(text(expires)) if expires else 0
        except ValueError:
            raise ValueError(f"result record {key!r}: bad {EXPIRES_HEADER} {expires!r}") from None
        return Decoded(key, Stored(value, text(status), expires_ms))

    def ready(self, entry: Stored) -> bool:
        """A final Celery state (success, failure, revoked)."""
        return entry.status in states.READY_STATES

    def replaces(self, known: Stored, new: Stored) -> bool:
        """Anything replaces a state but an unexpired success."""
        return known.status != states.SUCCESS or known.expired()

    def partition_key(self, key: str) -> str:
        """Records are partitioned by their whole key."""
        return key


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """The backend's own keys of ``result_backend_transport_options`` (defaults in brackets).

    results_topic: the compacted topic of results, created on first use with
        retention ``result_expires`` ["celery-bridge.results"].
    results_partitions: its partitions when created [6].
    write_timeout: seconds a result write waits for the broker's acknowledgement [30.0].
    read_timeout: seconds a state query waits to read its partition to the end [10.0].

    Every other key is the transport's (`celery_bridge.options.BridgeOptions`): client
    settings (``kafka_config``, ``producer_config``, ``consumer_config``...), layered
    over the ``KAFKA_JOBS_*`` environment as for the broker.
    """

    results_topic: str = DEFAULT_TOPIC
    results_partitions: int = DEFAULT_PARTITIONS
    write_timeout: float = 30.0
    read_timeout: float = 10.0

    @classmethod
    def from_transport_options(cls, options: Mapping[str, object]) -> BackendOptions:
        """The backend's keys of `options`; other keys are ignored."""
        made = cls(
            results_topic=str(options.get("results_topic") or DEFAULT_TOPIC),
            results_partitions=int(_number(options, "results_partitions", DEFAULT_PARTITIONS)),
            write_timeout=_number(options, "write_timeout", 30.0),
            read_timeout=_number(options, "read_timeout", 10.0),
        )
        if made.results_partitions < 1 or made.write_timeout <= 0 or made.read_timeout <= 0:
            raise ValueError("results_partitions, write_timeout and read_timeout must be positive")
        return made


def _number(options: Mapping[str, object], name: str, default: float) -> float:
    value = options.get(name, default)
    if not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return float(value)


def hosts_of_url(url: str | None) -> list[str]:
    """``host:port`` of each host of a backend URL (``;``- or ``,``-separated; port 9092)."""
    hosts = []
    for part in re.split(r"[;,]", url or ""):
        rest = _SCHEME.sub("", part.strip()).split("/", 1)[0].rsplit("@", 1)[-1]
        if rest:
            hosts.append(rest if ":" in rest else f"{rest}:9092")
    return hosts


def text(value: bytes | str) -> str:
    """`value` as text (Celery hands keys over as bytes or str)."""
    return value.decode() if isinstance(value, bytes) else value
