"""What a `celery_bridge.fetcher.Fetcher` hands out, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    """One fetched record and the assignment generation it was fetched under."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    generation: int
    redelivered: bool = False
    timestamp_ms: int = -1  # the record's timestamp; -1 when it has none


def purged(record: Record, end: int, at_ms: int) -> bool:
    """True when a purge mark (`end`, `at_ms`) covers `record`.

    A record written after the purge is never skipped, even below the mark: the
    topic was deleted and created again since.
    """
    return record.offset < end and record.timestamp_ms <= at_ms


class FetcherFailed(ConnectionError):
    """The consumer hit an error it cannot recover from; the connection must be rebuilt."""
