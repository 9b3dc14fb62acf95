"""Lowest-contiguous offset tracking for one partition: never commit past unfinished work."""

from __future__ import annotations

import itertools
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
        batch = offsets if type(offsets) is list else list(offsets)
        if not batch:
            return
        pending = self._pending
        first = batch[0]
        if pending and first <= pending[-1]:
            raise ValueError(f"offset {first} registered out of order after {pending[-1]}")
        if not pending and self._next is not None and first < self._next:
            raise ValueError(f"offset {first} is below the committable mark {self._next}")
        # One check of the whole batch at C speed instead of a comparison per offset.
        if len(batch) > 1 and sorted(set(batch)) != batch:
            for before, offset in itertools.pairwise(batch):
                if offset <= before:
                    raise ValueError(f"offset {offset} registered out of order after {before}")
        pending.extend(batch)
        if self._done:  # some may be known done already (collapse re-runs, commit metadata)
            self._advance()

    def mark_done(self, offsets: Iterable[int]) -> None:
        """Record that these dispatched offsets finished (ran, or were dead-lettered)."""
        pending = self._pending
        if (
            not self._done
            and type(offsets) is list
            and offsets
            and pending
            and offsets[0] == pending[0]
            and self._take_prefix(offsets)
        ):
            return
        self._done.update(offsets)
        self._advance()

    def _take_prefix(self, offsets: list[int]) -> bool:
        """The common case, a job's records finished in order: drop them at C speed.

        True when `offsets` were exactly the first pending offsets (nothing else is
        done), so the mark moves past them without a set of done offsets.
        """
        pending = self._pending
        count = len(offsets)
        if count > len(pending):
            return False
        if count == len(pending):
            if list(pending) != offsets:
                return False
            pending.clear()
        else:
            if list(itertools.islice(pending, count)) != offsets:
                return False
            self._pending = deque(itertools.islice(pending, count, None))
        self._next = offsets[-1] + 1
        return True

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
    def any_done_above(self) -> bool:
        """True when some offsets above the committable mark are known done."""
        return bool(self._done)

    @property
    def in_flight(self) -> int:
        """How many registered offsets are not part of the committable prefix yet."""
        return len(self._pending)
