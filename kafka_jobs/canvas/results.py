"""Handles of chains, groups and chords: they read their jobs' outcomes from the results topic.

Each is built from the ids a canvas fixed before enqueueing anything, so a
handle can wait for a job that does not exist yet. They only read; nothing a
handle does changes what the workers do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kafka_jobs.results.handle import JobResult
from kafka_jobs.results.outcome import State


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class ChainResult:
    """A chain's handle: the value is the last step's; a failed step's error is raised.

    A step that fails stops the chain, and the worker records that error as the
    outcome of every step that will now never run, so waiting on the last step
    is enough. `steps` has every step's own handle.
    """

    def __init__(self, steps: Sequence[JobResult]) -> None:
        self.steps = list(steps)

    @property
    def id(self) -> str:
        """The last step's job id (`kafka_jobs.result(id)` rebuilds its handle elsewhere)."""
        return self.steps[-1].id

    @property
    def state(self) -> State:
        """The last step's state."""
        return self.steps[-1].state

    def ready(self) -> bool:
        """True once the last step has a final outcome (it ran, or the chain stopped)."""
        return self.steps[-1].ready()

    def get(self, timeout: float | None = None) -> object:
        """The last step's value, waiting up to `timeout`; raises the failed step's error."""
        return self.steps[-1].get(timeout)

    async def aget(self, timeout: float | None = None) -> object:
        """`get` for coroutines."""
        return await self.steps[-1].aget(timeout)

    def __repr__(self) -> str:
        return f"<ChainResult {len(self.steps)} steps, last {self.id}>"


class GroupResult:
    """A group's handle: its members' results in the order they were given."""

    def __init__(self, group_id: str, results: Sequence[JobResult]) -> None:
        self.id = group_id
        self.results = list(results)

    def ready(self) -> bool:
        """True once every member has a final outcome."""
        return all(result.ready() for result in self.results)

    def get(self, timeout: float | None = None) -> list[object]:
        """Every member's value, in order, within `timeout` in all.

        Raises the error of the first failed member in that order, or
        `ResultUnavailable` when a member has no outcome in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return [result.get(_left(deadline)) for result in self.results]

    async def aget(self, timeout: float | None = None) -> list[object]:
        """`get` for coroutines."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return [await result.aget(_left(deadline)) for result in self.results]

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} {len(self.results)} members>"


class ChordResult:
    """A chord's handle: the callback's result, and the members' as `group`.

    When a member fails the callback never runs and its outcome records that
    member's error (Celery's policy): `get()` raises it.
    """

    def __init__(self, chord_id: str, group: GroupResult, callback: JobResult) -> None:
        self.id = chord_id
        self.group = group
        self.callback = callback

    @property
    def state(self) -> State:
        """The callback's state (failed when a member failed)."""
        return self.callback.state

    def ready(self) -> bool:
        """True once the callback ran, or the chord failed."""
        return self.callback.ready()

    def get(self, timeout: float | None = None) -> object:
        """The callback's value, waiting up to `timeout`; raises a failed member's error."""
        return self.callback.get(timeout)

    async def aget(self, timeout: float | None = None) -> object:
        """`get` for coroutines."""
        return await self.callback.aget(timeout)

    def __repr__(self) -> str:
        return f"<ChordResult {self.id} {len(self.group)} members, callback {self.callback.id}>"
