"""The wire format: one Kafka record per job, metadata in headers, the call as JSON.

Headers (all values UTF-8):

=================  =========================================================
``kj-version``     wire-format version, currently ``1``
``kj-task``        registered task name
``kj-id``          job id (32 hex digits)
``kj-key``         partition key, when the job has one
``kj-attempt``     attempt number, 1 for the first run
``kj-enqueued-at`` enqueue time, milliseconds since the epoch
``content-type``   ``application/json``
=================  =========================================================

The value is ``{"args": [...], "kwargs": {...}}``. The worker routes on
headers alone; it decodes the value only to run the job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka_jobs.errors import NotDecodable, UnknownFormatVersion

FORMAT_VERSION = 1
JSON_CONTENT_TYPE = "application/json"

H_VERSION = "kj-version"
H_TASK = "kj-task"
H_ID = "kj-id"
H_KEY = "kj-key"
H_ATTEMPT = "kj-attempt"
H_ENQUEUED_AT = "kj-enqueued-at"
H_CONTENT_TYPE = "content-type"

_VERSION_BYTES = str(FORMAT_VERSION).encode()
_JSON_BYTES = JSON_CONTENT_TYPE.encode()
_REQUIRED = (H_VERSION, H_TASK, H_ID, H_ATTEMPT, H_ENQUEUED_AT, H_CONTENT_TYPE)

Headers = list[tuple[str, str | bytes | None]]
RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded job: which task to call, with what, and its metadata."""

    task: str
    job_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    attempt: int
    enqueued_at_ms: int
    key: bytes | None = None
    headers: Mapping[str, bytes | None] = field(default_factory=dict)


def new_job_id() -> str:
    """A fresh, unique job id."""
    return uuid.uuid4().hex


def encode_value(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The record value for a call; `TypeError` names the argument JSON cannot encode."""
    try:
        return json.dumps({"args": args, "kwargs": kwargs}, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{_unencodable_argument(args, kwargs)} cannot be encoded as JSON: {exc}"
        ) from None


def _unencodable_argument(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    for position, value in enumerate(args):
        if not _encodes(value):
            return f"positional argument {position} ({type(value).__name__})"
    for name, value in kwargs.items():
        if not _encodes(value):
            return f"argument {name!r} ({type(value).__name__})"
    return "an argument"


def _encodes(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def encode_headers(
    task: str,
    job_id: str,
    key: bytes | None,
    attempt: int = 1,
    enqueued_at_ms: int | None = None,
    extra: Mapping[str, str | bytes] | None = None,
) -> Headers:
    """The record headers of a job; `extra` (user headers) come last and cannot replace ours."""
    headers: Headers = [
        (H_VERSION, _VERSION_BYTES),
        (H_TASK, task.encode()),
        (H_ID, job_id.encode()),
        (H_ATTEMPT, str(attempt).encode()),
        (H_ENQUEUED_AT, str(enqueued_at_ms if enqueued_at_ms is not None else now_ms()).encode()),
        (H_CONTENT_TYPE, _JSON_BYTES),
    ]
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
    found: dict[str, bytes | None] = {}
    if raw:
        for name, value in raw.items() if isinstance(raw, Mapping) else raw:
            if name not in found:
                found[name] = value.encode() if isinstance(value, str) else value
    return found


def read_task_name(raw: RawHeaders) -> str | None:
    """The task name from a record's headers, without decoding anything else."""
    value = header_map(raw).get(H_TASK)
    try:
        return value.decode() if value is not None else None
    except UnicodeDecodeError:
        return None


def decode(
    value: bytes | None,
    raw_headers: RawHeaders,
    key: bytes | None = None,
) -> Envelope:
    """Decode and validate one record; raises a `RecordRejected` subclass naming what is wrong."""
    headers = header_map(raw_headers)
    for name in _REQUIRED:
        if headers.get(name) is None:
            raise NotDecodable(f"missing header {name!r}")
    if headers[H_VERSION] != _VERSION_BYTES:
        raise UnknownFormatVersion(f"wire-format version {headers[H_VERSION]!r} is not supported")
    if headers[H_CONTENT_TYPE] != _JSON_BYTES:
        raise NotDecodable(f"content type {headers[H_CONTENT_TYPE]!r} is not supported")
    try:
        task = _text(headers, H_TASK)
        job_id = _text(headers, H_ID)
        attempt = int(_text(headers, H_ATTEMPT))
        enqueued_at_ms = int(_text(headers, H_ENQUEUED_AT))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotDecodable(f"malformed header: {exc}") from None
    if not task or not job_id or attempt < 1:
        raise NotDecodable("empty task name, empty job id, or attempt below 1")
    if value is None:
        raise NotDecodable("record has no value")
    try:
        call = json.loads(value)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise NotDecodable(f"value is not JSON: {exc}") from None
    if type(call) is not dict:
        raise NotDecodable("value is not a JSON object")
    args = call.get("args", [])
    kwargs = call.get("kwargs", {})
    if type(args) is not list or type(kwargs) is not dict:
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


def _text(headers: Mapping[str, bytes | None], name: str) -> str:
    value = headers[name]
    assert value is not None  # checked by the caller
    return value.decode()
