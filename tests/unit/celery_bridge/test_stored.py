"""Celery result records as the results reader reads them (no broker)."""

from __future__ import annotations

import pytest

from celery_bridge.stored import (
    EXPIRES_HEADER,
    STATUS_HEADER,
    BackendOptions,
    Stored,
    StoredFormat,
    hosts_of_url,
)
from kafka_jobs.wire import now_ms


class FakeMessage:
    def __init__(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self._key, self._value, self._headers = key, value, headers

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


FORMAT = StoredFormat()


def test_a_record_carries_payload_state_and_expiry() -> None:
    message = FakeMessage(
        b"celery-task-meta-1", b"{}", [(STATUS_HEADER, b"SUCCESS"), (EXPIRES_HEADER, b"123")]
    )
    decoded = FORMAT.decode(message)  # type: ignore[arg-type]
    assert decoded is not None and decoded.key == "celery-task-meta-1"
    assert decoded.entry == Stored(b"{}", "SUCCESS", 123)


def test_an_empty_value_is_a_tombstone_and_keyless_records_are_skipped() -> None:
    tombstone = FORMAT.decode(FakeMessage(b"k", None, []))  # type: ignore[arg-type]
    assert tombstone is not None and tombstone.entry is None
    assert FORMAT.decode(FakeMessage(None, b"{}", [(STATUS_HEADER, b"SUCCESS")])) is None  # type: ignore[arg-type]


def test_malformed_records_are_refused() -> None:
    with pytest.raises(ValueError, match="no celery-status"):
        FORMAT.decode(FakeMessage(b"k", b"{}", []))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad kafkajobs-expires-ms"):
        FORMAT.decode(  # type: ignore[arg-type]
            FakeMessage(b"k", b"{}", [(STATUS_HEADER, b"SUCCESS"), (EXPIRES_HEADER, b"soon")])
        )


def test_a_success_stands_until_it_expires() -> None:
    later = now_ms() + 60_000
    success, failure = Stored(b"a", "SUCCESS", later), Stored(b"b", "FAILURE", later)
    started = Stored(b"c", "STARTED", later)
    assert FORMAT.replaces(started, success) and FORMAT.replaces(failure, success)
    assert not FORMAT.replaces(success, failure)
    assert FORMAT.replaces(Stored(b"a", "SUCCESS", now_ms() - 1), failure)
    assert FORMAT.ready(failure) and FORMAT.ready(success) and not FORMAT.ready(started)


def test_expiry_zero_means_never() -> None:
    assert not Stored(b"", "SUCCESS", 0).expired()
    assert Stored(b"", "SUCCESS", 1000).expired(at_ms=1000)
    assert not Stored(b"", "SUCCESS", 1000).expired(at_ms=999)


def test_hosts_and_options() -> None:
    assert hosts_of_url("kafkajobs://a:1;kafkajobs://b") == ["a:1", "b:9092"]
    assert hosts_of_url("kafkajobs://a:1,b:2") == ["a:1", "b:2"]
    assert hosts_of_url("kafkajobs://") == []
    options = BackendOptions.from_transport_options({"results_topic": "t", "read_timeout": "2"})
    assert (options.results_topic, options.read_timeout, options.results_partitions) == (
        "t",
        2.0,
        6,
    )
    with pytest.raises(ValueError, match="positive"):
        BackendOptions.from_transport_options({"results_partitions": 0})
