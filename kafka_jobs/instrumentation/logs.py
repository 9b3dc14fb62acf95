"""Log formats: plain text, `key=value` or JSON lines, with a record's coordinates as fields.

Log calls about a record pass its coordinates as `extra` (`Failure.fields()`),
so every format can show them as fields: topic, partition, offset, job_id,
task, attempt, group. `configure()` is what `kafka-jobs --log-format` calls.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO

FIELDS = ("group", "topic", "partition", "offset", "job_id", "task", "attempt")
"""Coordinates a log record may carry (set through `extra=`)."""

FORMATS = ("text", "kv", "json")

_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The coordinates the record carries (unknown ones, None, are left out)."""
    return {name: value for name in FIELDS if (value := getattr(record, name, None)) is not None}


class _StructuredFormatter(logging.Formatter):
    """A record as named fields: time, level, logger, message, coordinates, exception."""

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields_of(record),
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return fields


class KeyValueFormatter(_StructuredFormatter):
    """`ts=... level=... logger=... msg="..." topic=... offset=...`: one line, grep-able."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as `key=value` pairs."""
        return " ".join(f"{key}={_kv_value(value)}" for key, value in self.fields(record).items())


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        return json.dumps(self.fields(record), default=str)


def _kv_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def formatter(kind: str) -> logging.Formatter:
    """The formatter of a `--log-format` value."""
    if kind == "json":
        return JsonFormatter()
    if kind == "kv":
        return KeyValueFormatter()
    if kind == "text":
        return logging.Formatter(_TEXT)
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {kind!r}")


def configure(level: str = "info", kind: str = "text", stream: IO[str] | None = None) -> None:
    """Log to stderr (or `stream`) at `level` in format `kind`, replacing earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
