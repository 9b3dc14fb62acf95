"""The wire format: one Kafka record per job, metadata in headers, the call as JSON.

Headers (all values UTF-8):

=================  =========================================================
``kj-version``     wire-format version, currently ``1``
``kj-task``        registered task name
``kj-id``          job id (32 hex digits)
``kj-key``         partition key, when the job has one
``kj-attempt``     attempt number, 1 for the first run
``kj-enqueued-at`` enqueue time, milliseconds since the epoch
``content-type``   ``application/json``, or ``application/x-dill`` (signed)
``kj-signature``   hex HMAC-SHA256 of task, job id and value (dill only)
``kj-chain``       the chain's steps after this one (canvas only)
``kj-chord``       the chord this job is a member of (canvas only)
``kj-once``        run at most once per job id (canvas steps, chord callbacks)
``kj-expires``     not run when it would start after this time (ms since the epoch)
``kj-first-failed`` first failed run of a job re-enqueued for a retry (ms since the epoch)
=================  =========================================================

The value is ``{"args": [...], "kwargs": {...}}``, as JSON or, opted in per task,
as a dill pickle. A dill value is unpickled only after its signature verifies
under the worker's signing secret. The worker routes on headers alone; it
decodes the value only to run the job.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from kafka_jobs.errors import NotDecodable, UnknownFormatVersion
from kafka_jobs.signing import verify

FORMAT_VERSION = 1
JSON_CONTENT_TYPE = "application/json"

H_VERSION = "kj-version"
H_TASK = "kj-task"
H_ID = "kj-id"
H_KEY = "kj-key"
H_ATTEMPT = "kj-attempt"
H_ENQUEUED_AT = "kj-enqueued-at"
H_CONTENT_TYPE = "content-type"
H_SIGNATURE = "kj-signature"
H_EXPIRES = "kj-expires"
"""Milliseconds since the epoch after which the job is not started (`expires=`)."""
H_FIRST_FAILED = "kj-first-failed"
"""Milliseconds since the epoch of the first failed run, on a job re-enqueued for a retry."""

# Delayed jobs (see `kafka_jobs.delay.tiers`).
H_ETA = "kj-eta"
H_TARGET = "kj-target-topic"
H_NOT_BEFORE = "kj-not-before"

# Dead letters (see `kafka_jobs.deadletter`).
DLQ_PREFIX = "kj-dlq-"
H_DLQ_REASON = "kj-dlq-reason"
H_DLQ_EXCEPTION = "kj-dlq-exception"
H_DLQ_MESSAGE = "kj-dlq-message"
H_DLQ_TRACEBACK = "kj-dlq-traceback"
H_DLQ_TOPIC = "kj-dlq-topic"
H_DLQ_PARTITION = "kj-dlq-partition"
H_DLQ_OFFSET = "kj-dlq-offset"
H_DLQ_GROUP = "kj-dlq-group"
H_DLQ_ATTEMPTS = "kj-dlq-attempts"
H_DLQ_FIRST_FAILED = "kj-dlq-first-failed-at"
H_DLQ_LAST_FAILED = "kj-dlq-last-failed-at"
H_DLQ_HOST = "kj-dlq-host"
H_DLQ_TRACE_ID = "kj-dlq-trace-id"
H_DLQ_REPLAYED = "kj-dlq-replayed"
H_REPLAYED_FROM = "kj-replayed-from"
"""On a replayed record: `topic/partition/offset` of the dead letter it came from."""
DILL_CONTENT_TYPE = "application/x-dill"

# Canvas (see `kafka_jobs.canvas`).
H_CHAIN = "kj-chain"
"""On a chain step: the steps after it (JSON list); the worker enqueues the next."""
H_CHORD = "kj-chord"
"""On a chord member: the chord (JSON: id, start time, size, callback step)."""
H_ONCE = "kj-once"
"""On a step with a precomputed id: a copy is skipped once the id has a final outcome.

The value is when the canvas started (ms): outcomes are looked for from then on."""

_VERSION_BYTES = str(FORMAT_VERSION).encode()
_JSON_BYTES = JSON_CONTENT_TYPE.encode()
_DILL_BYTES = DILL_CONTENT_TYPE.encode()
_json_decode = json.JSONDecoder().decode
_encode_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per call

JSON = str | int | float | bool | None | list["JSON"] | dict[str, "JSON"]
"""A JSON value, as `json.loads` gives it and `json.dumps` takes it."""

Headers = list[tuple[str, str | bytes | None]]
RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


class Envelope(NamedTuple):
    """A decoded job: which task to call, with what, and its metadata.

    A named tuple (immutable, and cheaper to build than a frozen dataclass: one
    is made per consumed record).
    """

    task: str
    job_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    attempt: int
    enqueued_at_ms: int
    key: bytes | None = None
    headers: Mapping[str, bytes | None] = {}


class _JobIds:
    """32 hex digits: 64 random bits per process (new in a forked child), then a counter.

    About 10x cheaper than `uuid.uuid4().hex` (no system call per id), as unique
    across processes as 64 random bits make it, and in a process never repeated.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4)))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_job_ids = _JobIds()
os.register_at_fork(after_in_child=_job_ids.reseed)


def new_job_id() -> str:
    """A fresh, unique job id (32 hex digits)."""
    return _job_ids.next()


def encode_value(args: Sequence[object], kwargs: Mapping[str, object]) -> bytes:
    """The record value for a call; `TypeError` names the argument JSON cannot encode."""
    try:
        return _encode_json({"args": args, "kwargs": kwargs}).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{_unencodable_argument(args, kwargs)} cannot be encoded as JSON: {exc}"
        ) from None


def encode_dill_value(args: Sequence[object], kwargs: Mapping[str, object]) -> bytes:
    """The record value for a call, pickled with dill (closures, lambdas, objects)."""
    import dill

    try:
        return bytes(dill.dumps({"args": tuple(args), "kwargs": dict(kwargs)}))
    except Exception as exc:
        raise TypeError(
            f"{_unencodable_argument(args, kwargs, dill.dumps)} cannot be pickled: {exc}"
        ) from None


def _unencodable_argument(
    args: Sequence[object],
    kwargs: Mapping[str, object],
    dumps: Callable[[object], object] = json.dumps,
) -> str:
    for position, value in enumerate(args):
        if not _encodes(value, dumps):
            return f"positional argument {position} ({type(value).__name__})"
    for name, value in kwargs.items():
        if not _encodes(value, dumps):
            return f"argument {name!r} ({type(value).__name__})"
    return "an argument"


def _encodes(value: object, dumps: Callable[[object], object]) -> bool:
    try:
        dumps(value)
    except Exception:
        return False
    return True


def encode_headers(
    task: str,
    job_id: str,
    key: bytes | None,
    attempt: int = 1,
    enqueued_at_ms: int | None = None,
    extra: Mapping[str, str | bytes] | None = None,
    signature: bytes | None = None,
) -> Headers:
    """The record headers of a job; `extra` (user headers) come last and cannot replace ours."""
    headers: Headers = [
        (H_VERSION, _VERSION_BYTES),
        (H_TASK, task.encode()),
        (H_ID, job_id.encode()),
        (H_ATTEMPT, str(attempt).encode()),
        (H_ENQUEUED_AT, str(enqueued_at_ms if enqueued_at_ms is not None else now_ms()).encode()),
        (H_CONTENT_TYPE, _JSON_BYTES if signature is None else _DILL_BYTES),
    ]
    if signature is not None:
        headers.append((H_SIGNATURE, signature))
    if key is not None:
        headers.append((H_KEY, key))
    if extra:
        for name, value in extra.items():
            if name.startswith("kj-") or name == H_CONTENT_TYPE:
                raise ValueError(f"header {name!r} is reserved for kafka-jobs")
            headers.append((name, value.encode() if isinstance(value, str) else value))
    return headers


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def header_map(raw: RawHeaders) -> dict[str, bytes | None]:
    """Headers as a dict; on repeated names the first wins (ours are written first)."""
    if not raw:
        return {}
    if type(raw) is list:
        found = dict(reversed(raw))  # C speed; reversed so that the first occurrence wins
    else:
        found = {}
        for name, value in raw.items() if isinstance(raw, Mapping) else raw:
            found.setdefault(name, value)
    for name, value in found.items():
        if type(value) is str:  # only from Python callers; the wire gives bytes
            found[name] = value.encode()
    return found


def read_task_name(raw: RawHeaders) -> str | None:
    """The task name from a record's headers, without decoding anything else."""
    return _read_text(raw, H_TASK)


def read_job_id(raw: RawHeaders) -> str | None:
    """The job id from a record's headers, without decoding anything else."""
    return _read_text(raw, H_ID)


def read_first_failed_ms(raw: RawHeaders) -> int | None:
    """When a re-enqueued job first failed (ms since the epoch); None if not carried."""
    text = _read_text(raw, H_FIRST_FAILED)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def retried_headers(raw: RawHeaders, attempt: int, first_failed_ms: int) -> Headers:
    """A record's headers for its re-enqueued copy: the next attempt and the first failure.

    Everything else (id, key, trace, expiry, canvas) is kept as it was.
    """
    replaced = (H_ATTEMPT, H_FIRST_FAILED)
    kept: Headers = [
        (name, value) for name, value in header_map(raw).items() if name not in replaced
    ]
    return [
        *kept,
        (H_ATTEMPT, str(attempt).encode()),
        (H_FIRST_FAILED, str(first_failed_ms).encode()),
    ]


def _read_text(raw: RawHeaders, name: str) -> str | None:
    value = header_map(raw).get(name)
    try:
        return value.decode() if value is not None else None
    except UnicodeDecodeError:
        return None


def decode(
    value: bytes | None,
    raw_headers: RawHeaders,
    key: bytes | None = None,
    secret: bytes | None = None,
) -> Envelope:
    """Decode and validate one record; raises a `RecordRejected` subclass naming what is wrong.

    A dill value is unpickled only if its signature verifies under `secret`.
    """
    headers = header_map(raw_headers)
    try:
        version = headers[H_VERSION]
        task_raw = headers[H_TASK]
        id_raw = headers[H_ID]
        attempt_raw = headers[H_ATTEMPT]
        enqueued_raw = headers[H_ENQUEUED_AT]
        content_type = headers[H_CONTENT_TYPE]
    except KeyError as missing:
        raise NotDecodable(f"missing header {missing.args[0]!r}") from None
    if (
        version is None
        or task_raw is None
        or id_raw is None
        or attempt_raw is None
        or enqueued_raw is None
        or content_type is None
    ):
        raise NotDecodable("missing header: a required header has no value")
    if version != _VERSION_BYTES:
        raise UnknownFormatVersion(f"wire-format version {version!r} is not supported")
    if content_type != _JSON_BYTES and content_type != _DILL_BYTES:
        raise NotDecodable(f"content type {content_type!r} is not supported")
    try:
        task = task_raw.decode()
        job_id = id_raw.decode()
        attempt = int(attempt_raw)
        enqueued_at_ms = int(enqueued_raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotDecodable(f"malformed header: {exc}") from None
    if not task or not job_id or attempt < 1:
        raise NotDecodable("empty task name, empty job id, or attempt below 1")
    if value is None:
        raise NotDecodable("record has no value")
    if content_type == _JSON_BYTES:
        try:
            call = _json_decode(value.decode())  # text first: spares json its encoding sniffing
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise NotDecodable(f"value is not JSON: {exc}") from None
    else:
        verify(secret, task, job_id, value, headers.get(H_SIGNATURE))
        call = _unpickle(value)
    if type(call) is not dict:
        raise NotDecodable("value is not a JSON object")
    args = call.get("args", [])
    kwargs = call.get("kwargs", {})
    if type(args) not in (list, tuple) or type(kwargs) is not dict:
        raise NotDecodable("'args' must be a list and 'kwargs' an object")
    return Envelope(
        task=task,
        job_id=job_id,
        args=tuple(args),
        kwargs=kwargs,
        attempt=attempt,
        enqueued_at_ms=enqueued_at_ms,
        key=headers.get(H_KEY, key),
        headers=headers,
    )


def _unpickle(value: bytes) -> Any:
    """Only ever called on a value whose signature verified."""
    import dill

    try:
        return dill.loads(value)
    except Exception as exc:
        raise NotDecodable(f"signed dill value does not unpickle: {exc!r}") from None
