"""Lowest-contiguous offset tracking for one partition: never commit past unfinished work."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class OffsetTracker:
    """Which offsets of one partition were handed out, which are done, what may be committed.

    Offsets are registered in increasing order as records are dispatched (Kafka
    offsets are not contiguous: transaction markers and compaction leave gaps)
    and may be marked done in any order (virtual partitions finish out of order).
    `committable()` is the offset to commit: one past the highest offset below
    which every registered record is done.

    Not thread-safe: the listener thread owns it.
    """

    __slots__ = ("_done", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None

    def register(self, offsets: Iterable[int]) -> None:
        """Record that these offsets were dispatched (ascending, above all earlier ones)."""
        pending = self._pending
        for offset in offsets:
            if pending and offset <= pending[-1]:
                raise ValueError(f"offset {offset} registered out of order after {pending[-1]}")
            if not pending and self._next is not None and offset < self._next:
                raise ValueError(f"offset {offset} is below the committable mark {self._next}")
            pending.append(offset)
        self._advance()  # some may be known done already (collapse re-runs, commit metadata)

    def mark_done(self, offsets: Iterable[int]) -> None:
        """Record that these dispatched offsets finished (ran, or were dead-lettered)."""
        self._done.update(offsets)
        self._advance()

    def _advance(self) -> None:
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            offset = pending.popleft()
            done.discard(offset)
            self._next = offset + 1

    def rewind(self, offset: int) -> None:
        """Forget dispatched offsets from `offset` on: they will be fetched and registered again.

        Used when a record is retried (the partition is sought back to it) and when
        the consumer's position moved backwards. Offsets already marked done stay
        done; the committable mark only moves back if `offset` lies below it.
        """
        pending = self._pending
        while pending and pending[-1] >= offset:
            pending.pop()
        if self._next is not None and self._next > offset:
            self._next = offset

    def is_done(self, offset: int) -> bool:
        """True when `offset` is known to be done (below the mark, or finished above it)."""
        return (self._next is not None and offset < self._next) or offset in self._done

    def done_above(self) -> set[int]:
        """Offsets finished above the committable mark (for commit metadata)."""
        return set(self._done)

    @property
    def last_registered(self) -> int | None:
        """The highest offset dispatched and not yet part of the committable prefix."""
        return self._pending[-1] if self._pending else None

    def committable(self) -> int | None:
        """The offset to commit (next to consume), or None when nothing finished yet."""
        return self._next

    def held_at(self) -> int | None:
        """The first dispatched offset while it is unfinished and records above it are done.

        Committing it moves nothing, but carries the finished ones in the commit's
        metadata, so a kill -9 does not run them again.
        """
        if self._next is None and self._done and self._pending:
            return self._pending[0]
        return None

    @property
    def in_flight(self) -> int:
        """How many registered offsets are not part of the committable prefix yet."""
        return len(self._pending)
