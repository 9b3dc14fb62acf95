"""Kombu messages as Kafka records, and back.

A Celery message becomes one record:

* value: the message body as published (no base64: Kafka values are bytes);
* key: the partition key (see `partition_key`), else none (the client spreads records);
* headers: ``content-type`` and ``content-encoding`` as text; every message header
  (Celery's ``task``, ``id``, ``root_id``, ``retries``, ``eta``...) under its own name
  with a JSON value; kombu's routing and properties under ``kombu-`` names:

  ========================  ===============================================
  ``kombu-version``         ``1``: marks a record written by this transport
  ``kombu-exchange``        exchange it was published to (text)
  ``kombu-routing-key``     routing key (text)
  ``kombu-prop-<name>``     each message property (``correlation_id``,
                            ``reply_to``, ``priority``...), JSON
  ========================  ===============================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kafka_jobs.wire import JSON, Headers

VERSION = b"1"
H_VERSION = "kombu-version"
H_EXCHANGE = "kombu-exchange"
H_ROUTING_KEY = "kombu-routing-key"
PROP_PREFIX = "kombu-prop-"
RESERVED_PREFIX = "kombu-"
H_CONTENT_TYPE = "content-type"
H_CONTENT_ENCODING = "content-encoding"

#: message header (or publish option) whose value becomes the record key
PARTITION_KEY = "partition_key"

# Per-delivery properties kombu adds on the consuming side; never sent.
_LOCAL_PROPERTIES = frozenset({"delivery_info", "delivery_tag", "body_encoding"})

RecordHeaders = Headers  # (name, value) pairs as confluent-kafka takes them


class NotAKombuMessage(ValueError):
    """A record on a queue topic that this transport did not write and cannot read."""


def _json(value: object) -> bytes:
    # Most Celery header values are plain strings, ints or None: skip json.dumps for them
    # (it dominated publish time in profiles). The fast paths produce the same JSON.
    kind = type(value)
    if kind is str:
        text = str(value)  # value itself (exactly a str)
        if text.isprintable() and '"' not in text and "\\" not in text:
            return f'"{text}"'.encode()
    elif kind is int:
        return str(value).encode()
    elif value is None:
        return b"null"
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def partition_key(message: Mapping[str, Any]) -> bytes | None:
    """The record key: ``partition_key`` from the properties, else from the headers."""
    key = message.get("properties", {}).get(PARTITION_KEY)
    if key is None:
        key = (message.get("headers") or {}).get(PARTITION_KEY)
    if key is None:
        return None
    return key if isinstance(key, bytes) else str(key).encode()


def to_record(
    message: Mapping[str, Any], exchange: str, routing_key: str
) -> tuple[bytes, bytes | None, RecordHeaders]:
    """(value, key, headers) of the record for a kombu message dict."""
    body = message.get("body") or b""
    value = body.encode() if isinstance(body, str) else bytes(body)
    headers: RecordHeaders = [
        (H_VERSION, VERSION),
        (H_EXCHANGE, (exchange or "").encode()),
        (H_ROUTING_KEY, (routing_key or "").encode()),
    ]
    for name in (H_CONTENT_TYPE, H_CONTENT_ENCODING):
        if message.get(name):
            headers.append((name, str(message[name]).encode()))
    for name, prop in (message.get("properties") or {}).items():
        if name not in _LOCAL_PROPERTIES and prop is not None:
            headers.append((PROP_PREFIX + name, _json(prop)))
    for name, header in (message.get("headers") or {}).items():
        if name.startswith(RESERVED_PREFIX) or name in (H_CONTENT_TYPE, H_CONTENT_ENCODING):
            raise ValueError(f"message header {name!r} clashes with the transport's own headers")
        headers.append((name, _json(header)))
    return value, partition_key(message), headers


def _load(raw: bytes | None) -> JSON:
    if raw is None:
        return None
    # Fast paths for what `_json` writes most (a plain string, null), then JSON.
    if len(raw) >= 2 and raw[0] == 0x22 and raw[-1] == 0x22 and b"\\" not in raw:
        inner = raw[1:-1]
        if b'"' not in inner:
            return inner.decode(errors="replace")
    elif raw == b"null":
        return None
    try:
        loaded: JSON = json.loads(raw)
    except ValueError:  # a header some other producer added: keep it as text
        return raw.decode(errors="replace")
    return loaded


def from_record(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> dict[str, Any]:
    """The kombu message dict (without delivery tag) of a record this transport wrote.

    Raises `NotAKombuMessage` for records without the transport's version header.
    """
    found: dict[str, bytes | None] = dict(headers or ())
    version = found.pop(H_VERSION, None)
    if version != VERSION:
        detail = "no kombu-version header" if version is None else f"kombu-version {version!r}"
        raise NotAKombuMessage(f"not a message of this transport ({detail})")
    exchange = (found.pop(H_EXCHANGE, None) or b"").decode(errors="replace")
    routing_key = (found.pop(H_ROUTING_KEY, None) or b"").decode(errors="replace")
    content_type = found.pop(H_CONTENT_TYPE, None)
    content_encoding = found.pop(H_CONTENT_ENCODING, None)
    properties: dict[str, JSON] = {}
    message_headers: dict[str, JSON] = {}
    for name, raw in found.items():
        if name.startswith(PROP_PREFIX):
            properties[name[len(PROP_PREFIX) :]] = _load(raw)
        elif not name.startswith(RESERVED_PREFIX):
            message_headers[name] = _load(raw)
    properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    properties["body_encoding"] = None
    return {
        "body": value or b"",
        "content-type": content_type.decode() if content_type else None,
        "content-encoding": content_encoding.decode() if content_encoding else None,
        "headers": message_headers,
        "properties": properties,
    }


def routing(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[str, str]:
    """(exchange, routing key) a record was published with ("" when absent)."""
    exchange = routing_key = ""
    for name, raw in headers or ():
        if name == H_EXCHANGE:
            exchange = (raw or b"").decode(errors="replace")
        elif name == H_ROUTING_KEY:
            routing_key = (raw or b"").decode(errors="replace")
    return exchange, routing_key
