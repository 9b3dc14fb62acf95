"""Lifecycle hooks: user code run as revocation, shutdown, idle and periodic jobs.

    @app.on("revoked", topic="orders")
    def flush_buffers(topic: str, partition: int) -> None: ...

    @app.on("periodic", every=30)
    def report(topic: str, partition: int) -> None: ...

Each hook becomes one job per owned partition, handed to the scheduler's
`schedule_revocation` / `schedule_shutdown` / `schedule_idle` /
`schedule_periodic`. Hook jobs never block polling and run even for a revoked
partition (they are housekeeping); a hook that raises is logged (`hook.failed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

HookEvent = Literal["revoked", "shutdown", "idle", "periodic"]

JOB_KINDS: dict[str, str] = {
    "revoked": "revocation",
    "shutdown": "shutdown",
    "idle": "idle",
    "periodic": "periodic",
}


@dataclass(frozen=True, slots=True)
class LifecycleHook:
    """A registered hook: when it runs, for which topic (None: all), how often (periodic)."""

    event: HookEvent
    fn: Callable[[str, int], None]
    topic: str | None = None
    every: float | None = None

    def applies_to(self, topic: str) -> bool:
        """True when this hook runs for partitions of `topic`."""
        return self.topic is None or self.topic == topic
