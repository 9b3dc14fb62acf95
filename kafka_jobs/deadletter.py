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

Replaying a dead letter writes a marker record into the dead-letter topic
(no value, header ``kj-dlq-replayed`` = ``partition:offset``), so a second
replay skips it.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kafka_jobs import wire
from kafka_jobs.wire import Headers, header_map

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
    original: Sequence[tuple[str, str | bytes | None]] | None,
) -> Headers:
    """The original headers (minus older dead-letter ones) followed by the error headers."""
    kept: Headers = [(n, v) for n, v in (original or []) if not n.startswith(PREFIX)]
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
