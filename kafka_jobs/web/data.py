"""What the dashboard shows, read from the broker only.

Groups, members and their partitions come from the states workers publish to
the status topic (`kafka_jobs.instrumentation.publisher`); committed and end offsets, lag and
dead-letter depths from the broker (`kafka_jobs.instrumentation.status`). A `Sampler` thread
collects an `Overview` every few seconds and keeps the lag history the charts
draw, so page loads never wait on the broker.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kafka_jobs.app import App
from kafka_jobs.connection.admin import admin_client
from kafka_jobs.delay.tiers import tier_topics
from kafka_jobs.instrumentation import status
from kafka_jobs.instrumentation.publisher import (
    FailureEntry,
    RetryEntry,
    WorkerState,
    read_states,
)
from kafka_jobs.instrumentation.status import PartitionStatus
from kafka_jobs.patterns import DEAD_LETTER_SUFFIX

log = logging.getLogger("kafka_jobs.web")

HISTORY_SECONDS = 600
"""How much lag history the charts keep (the last ten minutes)."""


@dataclass
class GroupView:
    """One consumer group: its live workers, its partitions, what went wrong lately."""

    name: str
    workers: list[WorkerState]
    partitions: list[PartitionStatus]
    failures: list[FailureEntry]
    retrying: list[RetryEntry]

    @property
    def lag(self) -> int:
        """Total lag of the group's partitions."""
        return sum(p.lag or 0 for p in self.partitions)

    @property
    def jobs_per_second(self) -> float:
        """Sum over the live workers."""
        return float(sum(w.get("jobs_per_second", 0.0) for w in self.workers))


@dataclass
class Overview:
    """Everything on the dashboard's front page at one moment."""

    at: float
    groups: list[GroupView]
    dead_letters: list[PartitionStatus]
    delayed_waiting: int
    error: str | None = None

    def group(self, name: str) -> GroupView | None:
        """The group called `name`, if shown."""
        return next((g for g in self.groups if g.name == name), None)


def collect(app: App) -> Overview:
    """Read the current overview from the broker (a few round trips per partition)."""
    states = read_states(app)
    names = sorted({app.settings.group_id, *(s["group"] for s in states)})
    groups = []
    dead_letters: list[PartitionStatus] = []
    for name in names:
        workers = [s for s in states if s["group"] == name]
        topics = sorted(
            {p["topic"] for w in workers for p in w["partitions"]}
            | (set(app.topics()) if name == app.settings.group_id else set())
        )
        # The app's own group also reads the dead-letter depths: one probe for both.
        dead = dead_letter_topics(app) if name == app.settings.group_id else []
        rows = status.collect(app, name, topics, dead, states)
        partitions = [row for row in rows if row.kind == "jobs"]
        dead_letters += [row for row in rows if row.kind != "jobs"]
        failures = sorted(
            (f for w in workers for f in w.get("recent_failures", [])),
            key=lambda f: f["at"],
            reverse=True,
        )
        retrying = sorted(
            (r for w in workers for r in w.get("retrying", [])), key=lambda r: r["due"]
        )
        groups.append(GroupView(name, workers, partitions, failures, retrying))
    prefix = app.settings.delay_topic_prefix
    delayed = status.collect(app, f"{prefix}.dispatcher", tier_topics(prefix), [])
    return Overview(
        at=time.time(),
        groups=groups,
        dead_letters=dead_letters,
        delayed_waiting=sum(row.lag or 0 for row in delayed),
    )


def dead_letter_topics(app: App) -> list[str]:
    """Dead-letter topics: those the app's jobs name, and every `*.dlq` topic that exists."""
    named = set(app.dead_letter_topics())
    admin = admin_client(app.settings.admin_settings())
    existing = set(admin.list_topics(timeout=10).topics)
    return sorted((named & existing) | {t for t in existing if t.endswith(DEAD_LETTER_SUFFIX)})


@dataclass
class LagHistory:
    """Lag samples per (group, topic): [(unix time, total lag of the topic's partitions)]."""

    seconds: float = HISTORY_SECONDS
    series: dict[tuple[str, str], deque[tuple[float, int]]] = field(default_factory=dict)

    def add(self, overview: Overview) -> None:
        """Record the overview's lag per group and topic; forget what is too old."""
        totals: dict[tuple[str, str], int] = {}
        for group in overview.groups:
            for row in group.partitions:
                key = (group.name, row.topic)
                totals[key] = totals.get(key, 0) + (row.lag or 0)
        for key, lag in totals.items():
            self.series.setdefault(key, deque()).append((overview.at, lag))
        horizon = overview.at - self.seconds
        for samples in self.series.values():
            while samples and samples[0][0] < horizon:
                samples.popleft()

    def points(self, group: str, topic: str) -> list[tuple[float, int]]:
        """The samples of one topic of one group, oldest first."""
        return list(self.series.get((group, topic), ()))


class Sampler:
    """Collects the overview every `interval` seconds on a daemon thread; keeps the latest."""

    def __init__(self, app: App, interval: float = 5.0) -> None:
        self.app = app
        self.interval = interval
        self.history = LagHistory()
        self._latest: Overview | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._sampled = threading.Event()  # set once the first sample is in
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="kafka-jobs-web-sampler", daemon=True
        )

    def start(self) -> Sampler:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def latest(self, wait: float = 15.0) -> Overview:
        """The newest overview (waits for the first one)."""
        self._sampled.wait(wait)
        with self._lock:
            if self._latest is None:
                return Overview(time.time(), [], [], 0, error="no data from the broker yet")
            return self._latest

    def refresh(self) -> None:
        """Sample now (after a replay, say) instead of at the next interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                overview = collect(self.app)
            except Exception as exc:  # the broker away: show it, keep the last figures
                log.warning("dashboard could not read the broker: %s", exc)
                with self._lock:
                    previous = self._latest
                    self._latest = (
                        Overview(time.time(), [], [], 0, error=str(exc))
                        if previous is None
                        else dataclasses.replace(previous, error=str(exc))
                    )
            else:
                with self._lock:
                    self.history.add(overview)
                    self._latest = overview
            self._sampled.set()
            self._wake.wait(self.interval)
            self._wake.clear()
