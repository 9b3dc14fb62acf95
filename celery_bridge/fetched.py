"""What a `celery_bridge.fetcher.Fetcher` hands out, and how it fails."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kafka_jobs.connection.client import Client, Key


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


#: End offsets of partitions, asked of the broker within a timeout (seconds).
EndOffsets = Callable[[list[Key], float], dict[Key, int]]


def names(keys: Iterable[Key]) -> str:
    """Partitions as text for log lines."""
    return ", ".join(f"{topic}[{partition}]" for topic, partition in keys) or "none"


class _HasClient(Protocol):
    @property
    def client(self) -> Client: ...


_fetchers: weakref.WeakSet[_HasClient] = weakref.WeakSet()
# Consumers of the parent, in a forked child (Celery's prefork pool): kept referenced
# there for good, since destroying a librdkafka client after fork crashes the child.
_inherited: list[Client] = []


def keep_after_fork(fetcher: _HasClient) -> None:
    """Never destroy `fetcher`'s client in a forked child (librdkafka would crash it)."""
    _fetchers.add(fetcher)


def _keep_inherited() -> None:
    _inherited.extend(fetcher.client for fetcher in list(_fetchers))


os.register_at_fork(after_in_child=_keep_inherited)
