"""Purge marks: their record format, and malformed marks ignored without harm."""

from __future__ import annotations

from typing import Any

from celery_bridge.options import BridgeOptions
from celery_bridge.purges import PurgeMark, PurgeMarks


class FakeMessage:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


class RecordingFetcher:
    def __init__(self) -> None:
        self.purged: list[tuple[Any, int, int]] = []

    def gate(self, ready: Any) -> None:
        pass

    def purge(self, key: Any, end: int, at_ms: int) -> None:
        self.purged.append((key, end, at_ms))


def test_a_mark_survives_its_record() -> None:
    mark = PurgeMark("g", "q", {0: 5, 3: 9}, 1234)
    key, value = mark.encode()
    assert PurgeMark.decode(value) == mark
    assert key == b'["g", "q"]'


def test_malformed_marks_and_tombstones_are_ignored_and_good_ones_applied() -> None:
    marks = PurgeMarks(BridgeOptions(), None, None)  # type: ignore[arg-type]
    fetcher = RecordingFetcher()
    marks._fetchers[fetcher] = "g"  # type: ignore[index]  # attach() would start a follower
    for bad in (b"not json", b'{"group": "g"}', b'{"group":"g","topic":"q","ends":7,"at":1}'):
        marks._on_record(FakeMessage(bad))  # type: ignore[arg-type]
    marks._on_record(FakeMessage(None))  # type: ignore[arg-type]
    assert fetcher.purged == []
    marks._on_record(FakeMessage(PurgeMark("g", "q", {1: 4}, 10).encode()[1]))  # type: ignore[arg-type]
    marks._on_record(FakeMessage(PurgeMark("other", "q", {1: 9}, 11).encode()[1]))  # type: ignore[arg-type]
    marks._on_record(FakeMessage(PurgeMark("g", "q", {1: 2}, 5).encode()[1]))  # type: ignore[arg-type]  # older
    assert fetcher.purged == [(("q", 1), 4, 10)]
