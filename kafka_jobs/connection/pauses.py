"""Paused partitions and when each resumes: a pure table, no client calls.

A partition pauses while a long-running job runs (until done: infinity), while a
record waits for its retry (its due time), or while a delayed record is not due.
Each pause remembers the offset to fetch again from, since pausing drops what
librdkafka had prefetched.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator

from kafka_jobs.connection.client import Client, Key

FOREVER = math.inf
"""Pause until `resume_at` is called (a running long-running job)."""

RETRY_REFUSED_AFTER = 0.1
"""Seconds before a refused seek is tried again."""


class PauseTracker:
    """Paused partitions: key -> (resume at, offset). Owner thread only.

    Times are whatever clock the owner uses (monotonic seconds, or epoch ms for
    the delay dispatcher), as long as it is the same in every call.
    """

    def __init__(self) -> None:
        self._paused: dict[Key, tuple[float, int]] = {}

    def pause(self, key: Key, until: float, offset: int) -> bool:
        """Hold `key` until `until`, then fetch from `offset`; True when newly paused."""
        new = key not in self._paused
        self._paused[key] = (until, offset)
        return new

    def due(self, now: float) -> list[tuple[Key, int]]:
        """Take the pauses whose time came: (key, offset to fetch from)."""
        ready = [(key, offset) for key, (until, offset) in self._paused.items() if until <= now]
        for key, _ in ready:
            del self._paused[key]
        return ready

    def drop(self, key: Key) -> bool:
        """Forget a pause (partition revoked); True when it was paused."""
        return self._paused.pop(key, None) is not None

    def clear(self) -> None:
        """Forget every pause (the connection is rebuilt)."""
        self._paused.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._paused

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._paused))

    def __len__(self) -> int:
        return len(self._paused)


def apply_pause(client: Client, pauses: PauseTracker, key: Key, until: float, offset: int) -> None:
    """Pause `key` on the client (once) and in the table."""
    if pauses.pause(key, until, offset):
        client.pause([key])


def resume_due(
    client: Client,
    pauses: PauseTracker,
    now: float,
    owned: Container[Key],
    retry_after: float = RETRY_REFUSED_AFTER,
) -> None:
    """Seek and resume the partitions whose pause ended (those still in `owned`).

    A refused seek (just after an assignment) stays paused and is tried again
    `retry_after` later, in the clock's own unit.
    """
    if not len(pauses):
        return
    for key, offset in pauses.due(now):
        if key in owned and not client.seek_and_resume(key, offset):
            pauses.pause(key, now + retry_after, offset)


def release(client: Client, pauses: PauseTracker, keys: list[Key]) -> None:
    """Forget pauses of partitions that leave, and lift them in librdkafka (it keeps them)."""
    lifted = [key for key in keys if pauses.drop(key)]
    if lifted:
        client.lift(lifted)
