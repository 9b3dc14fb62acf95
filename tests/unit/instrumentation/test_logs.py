"""Log formats: key=value and JSON lines carry a record's coordinates as fields."""

from __future__ import annotations

import io
import json
import logging

import pytest

from kafka_jobs.instrumentation import logs


def _emit(kind: str, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(kind))
    logger = logging.getLogger(f"test.logs.{kind}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # whatever other tests did to the root level
    try:
        logger.warning("retrying in %.1fs: %s", 0.5, "boom here", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().strip()


def test_json_line_has_message_and_coordinates() -> None:
    fields = {"topic": "orders", "partition": 3, "offset": 17, "job_id": "abc", "task": None}
    line = json.loads(_emit("json", **fields))
    assert line["msg"] == "retrying in 0.5s: boom here"
    assert (line["topic"], line["partition"], line["offset"], line["job_id"]) == (
        "orders",
        3,
        17,
        "abc",
    )
    assert "task" not in line and line["level"] == "warning"


def test_key_value_line_quotes_what_needs_it() -> None:
    line = _emit("kv", topic="orders", offset=17, job_id="abc")
    assert 'msg="retrying in 0.5s: boom here"' in line
    assert " topic=orders " in f"{line} " and " offset=17" in line and "job_id=abc" in line


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.formatter("xml")
