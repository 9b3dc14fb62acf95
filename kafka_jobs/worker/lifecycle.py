"""Lifecycle hooks of one subscription group, turned into jobs for the scheduler.

See `kafka_jobs.hooks` for what a hook is. This module decides when each hook
is due (revocation, shutdown, idle, periodic) and builds one job per owned
partition it applies to.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from kafka_jobs.hooks import JOB_KINDS, LifecycleHook
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import SerializedScheduler
from kafka_jobs.worker.subscription import SubscriptionGroup


class HookRunner:
    """Schedules a group's hook jobs. Listener thread only."""

    def __init__(
        self,
        group: SubscriptionGroup,
        hooks: Sequence[LifecycleHook],
        queue: JobsQueue,
        scheduler: SerializedScheduler,
        idle_interval: float,
    ) -> None:
        self.group = group.name
        # A pattern's topics are not known yet: keep every hook (each checks its topic).
        self.hooks = [
            h
            for h in hooks
            if group.pattern is not None or any(h.applies_to(t) for t in group.topics)
        ]
        self.queue = queue
        self.scheduler = scheduler
        self.idle_interval = idle_interval
        self._last_idle = 0.0
        self._due: dict[int, float] = {}  # periodic hook index -> monotonic due time

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def run(
        self, event: str, states: Sequence[PartitionState], hook: LifecycleHook | None = None
    ) -> None:
        """Hand one job per (partition, hook) of `event` to the scheduler."""
        hooks = [hook] if hook is not None else [h for h in self.hooks if h.event == event]
        jobs = [
            Job.lifecycle(
                self.group,
                state,
                JOB_KINDS[event],
                functools.partial(h.fn, state.topic, state.partition),
            )
            for state in states
            for h in hooks
            if h.applies_to(state.topic)
        ]
        if jobs:
            self.queue.track(jobs)
            self.scheduler.schedule(JOB_KINDS[event], jobs)

    def idle(self, states: Sequence[PartitionState]) -> None:
        """A poll brought nothing: idle hooks, at most once per interval."""
        now = time.monotonic()
        if now - self._last_idle < self.idle_interval:
            return
        self._last_idle = now
        self.run("idle", states)

    def periodic(self, states: Sequence[PartitionState]) -> None:
        """Periodic hooks whose interval passed."""
        now = time.monotonic()
        for index, hook in enumerate(self.hooks):
            if hook.event != "periodic" or hook.every is None:
                continue
            due = self._due.setdefault(index, now + hook.every)
            if due <= now:
                self._due[index] = now + hook.every
                self.run("periodic", states, hook)
