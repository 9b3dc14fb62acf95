"""Dead letters: the headers that explain a failed record, and reading them back.

A dead letter keeps the original key, value and headers and adds these
(all UTF-8 text):

=========================  ==================================================
``kj-dlq-reason``          ``job-failed`` or the rejection kind (``not-decodable``,
                           ``unknown-format-version``, ``unknown-task``,
                           ``bad-signature``, ``payload-too-large``)
``kj-dlq-exception``       exception class, ``module.QualName``
``kj-dlq-message``         ``str(exception)``, at most 1 000 characters
``kj-dlq-traceback``       formatted traceback, its last 8 000 characters
``kj-dlq-topic``           original topic
``kj-dlq-partition``       original partition
``kj-dlq-offset``          original offset
``kj-dlq-group``           consumer group that gave up
``kj-dlq-attempts``        runs made (0 for a record that could not run)
``kj-dlq-first-failed-at`` first failure, ms since the epoch
``kj-dlq-last-failed-at``  last failure, ms since the epoch
``kj-dlq-host``            ``hostname:pid`` of the worker
``kj-dlq-trace-id``        trace id from ``traceparent``, when present
=========================  ==================================================

Both the worker and the Celery bridge write dead letters through `Writer`:
it builds the record from the failed one and hands it to a producer-like port,
either waiting for the acknowledgement (`Writer.write`) or leaving it to a
delivery callback (`Writer.produce`).

Replaying a dead letter writes a marker record into the dead-letter topic
(no value, header ``kj-dlq-replayed`` = ``partition:offset``), so a second
replay skips it.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from confluent_kafka import KafkaError, Message

from kafka_jobs import wire
from kafka_jobs.wire import Headers, RawHeaders, header_map

if TYPE_CHECKING:
    from kafka_jobs.processing.ports import RecordWriter

# The names live in wire.py with every other header; short names for this module's users.
PREFIX = wire.DLQ_PREFIX
H_REASON = wire.H_DLQ_REASON
H_EXCEPTION = wire.H_DLQ_EXCEPTION
H_MESSAGE = wire.H_DLQ_MESSAGE
H_TRACEBACK = wire.H_DLQ_TRACEBACK
H_TOPIC = wire.H_DLQ_TOPIC
H_PARTITION = wire.H_DLQ_PARTITION
H_OFFSET = wire.H_DLQ_OFFSET
H_GROUP = wire.H_DLQ_GROUP
H_ATTEMPTS = wire.H_DLQ_ATTEMPTS
H_FIRST_FAILED = wire.H_DLQ_FIRST_FAILED
H_LAST_FAILED = wire.H_DLQ_LAST_FAILED
H_HOST = wire.H_DLQ_HOST
H_TRACE_ID = wire.H_DLQ_TRACE_ID
H_REPLAYED = wire.H_DLQ_REPLAYED

MAX_MESSAGE = 1_000
MAX_TRACEBACK = 8_000
JOB_FAILED = "job-failed"
TIME_LIMIT = "time-limit"
"""A job ended by its hard time limit: retried per its policy, like a job that raised."""
RAN = (JOB_FAILED, TIME_LIMIT)
"""Reasons of records whose job ran (and so may be retried)."""

_HOST = f"{socket.gethostname()}:{os.getpid()}"


def default_topic(topic: str) -> str:
    """The dead-letter topic of `topic` unless configured otherwise."""
    return f"{topic}.dlq"


def format_traceback(error: BaseException) -> str:
    """The formatted traceback, bounded (the end, where the error is, is kept)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text if len(text) <= MAX_TRACEBACK else "...\n" + text[-MAX_TRACEBACK:]


def error_headers(
    *,
    error: BaseException,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    attempts: int,
    first_failed_ms: int,
    last_failed_ms: int,
    original: RawHeaders,
) -> Headers:
    """The original headers (minus older dead-letter ones) followed by the error headers."""
    pairs = original.items() if isinstance(original, Mapping) else (original or [])
    kept: Headers = [(n, v) for n, v in pairs if not n.startswith(PREFIX)]
    kind = type(error)
    added: list[tuple[str, str]] = [
        (H_REASON, reason),
        (H_EXCEPTION, f"{kind.__module__}.{kind.__qualname__}"),
        (H_MESSAGE, str(error)[:MAX_MESSAGE]),
        (H_TRACEBACK, format_traceback(error)),
        (H_TOPIC, topic),
        (H_PARTITION, str(partition)),
        (H_OFFSET, str(offset)),
        (H_GROUP, group),
        (H_ATTEMPTS, str(attempts)),
        (H_FIRST_FAILED, str(first_failed_ms)),
        (H_LAST_FAILED, str(last_failed_ms)),
        (H_HOST, _HOST),
    ]
    trace_id = _trace_id(header_map(original).get("traceparent"))
    if trace_id:
        added.append((H_TRACE_ID, trace_id))
    return kept + [(name, value.encode()) for name, value in added]


def _trace_id(traceparent: bytes | None) -> str | None:
    # W3C: version-traceid-parentid-flags
    if not traceparent:
        return None
    parts = traceparent.decode(errors="replace").split("-")
    return parts[1] if len(parts) == 4 else None


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record to dead-letter: where it was read, what it held, and why it failed.

    topic, partition, offset: where the record was read.
    key, value, headers: what it held (kept in the dead letter).
    reason: `JOB_FAILED` or why it could not run.
    error: the exception that failed it.
    attempts: runs made (0 for a record that could not run).
    first_failed_ms, last_failed_ms: its first and last failure, ms since the epoch.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: RawHeaders
    reason: str
    error: BaseException
    attempts: int
    first_failed_ms: int
    last_failed_ms: int


OnDelivery = Callable[[KafkaError | None, Message], None]
"""A producer's delivery report: the error (None once acknowledged) and the record."""


class RecordProducer(Protocol):
    """Hands records to a producer without waiting (`JobProducer` is one)."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Start writing one record; `on_delivery` gets the broker's report."""


class Writer:
    """Builds dead letters for one consumer group and writes them.

    The one writer of dead letters: the worker's failure policy waits for each
    acknowledgement (`write`), the Celery bridge acks its record from the delivery
    report (`produce`). Both raise what the port raises when the record cannot be
    handed over (`EnqueueError`).

    group: the consumer group named in the dead letters' headers.

    Thread-safe: it keeps nothing but the group.
    """

    def __init__(self, group: str) -> None:
        self.group = group

    def headers(self, failed: FailedRecord, extra: Sequence[tuple[str, bytes]] = ()) -> Headers:
        """The dead letter's headers: the original ones, the error headers, then `extra`."""
        headers = error_headers(
            error=failed.error,
            reason=failed.reason,
            topic=failed.topic,
            partition=failed.partition,
            offset=failed.offset,
            group=self.group,
            attempts=failed.attempts,
            first_failed_ms=failed.first_failed_ms,
            last_failed_ms=failed.last_failed_ms,
            original=failed.headers,
        )
        headers.extend(extra)
        return headers

    def write(
        self,
        writer: RecordWriter,
        topic: str,
        failed: FailedRecord,
        *,
        timeout: float,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Write the dead letter of `failed` to `topic` and wait for its acknowledgement.

        Raises:
            DeliveryError: the broker did not acknowledge it within `timeout` seconds.
            EnqueueError: the writer could not take it.
        """
        headers = self.headers(failed, extra)
        writer.enqueue(topic, "", failed.value, failed.key, headers).wait(timeout)

    def produce(
        self,
        producer: RecordProducer,
        topic: str,
        failed: FailedRecord,
        on_delivery: OnDelivery,
        *,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Hand the dead letter of `failed` to `producer`; `on_delivery` gets the report.

        Raises:
            EnqueueError: the producer could not take it.
        """
        headers = self.headers(failed, extra)
        producer.produce(topic, failed.value, failed.key, headers, on_delivery)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record as read back from its topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @property
    def info(self) -> dict[str, str]:
        """The dead-letter headers, decoded, by name without the prefix."""
        return {
            name[len(PREFIX) :]: (value or b"").decode(errors="replace")
            for name, value in self.headers
            if name.startswith(PREFIX) and isinstance(value, bytes)
        }

    @property
    def task(self) -> str:
        """The task name the record carried, if any."""
        value = header_map(self.headers).get(wire.H_TASK)
        return value.decode(errors="replace") if value else "?"

    def original_headers(self) -> Headers:
        """Headers to replay with: dead-letter headers dropped, the attempt count reset."""
        kept: Headers = []
        for name, value in self.headers:
            if name.startswith(PREFIX):
                continue
            kept.append((name, b"1" if name == wire.H_ATTEMPT else value))
        return kept


def is_replay_marker(headers: Mapping[str, bytes | None]) -> bool:
    """True for the markers `replay` writes into a dead-letter topic."""
    return H_REPLAYED in headers
