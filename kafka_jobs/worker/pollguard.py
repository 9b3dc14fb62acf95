"""The poll-interval guard: keep regular (blocking) topics clear of `max.poll.interval.ms`.

A regular batch must finish before the listener polls again, so batch size x
per-job time must stay under `max.poll.interval.ms`, or the member is removed
from its group and the batch runs again elsewhere, forever. Neither number
alone shows the trap; only the ratio with the real per-job time does, and that
is known only at run time. The guard measures it:

- after jobs finish: when batch size x observed p99 job time exceeds 70 % of the
  limit, it warns once per topic, naming the batch size that fits; with
  `adaptive_batch` it shrinks the batch itself and grows it back when jobs are fast;
- while jobs run: when the listener has not polled for 70 % of the limit, it
  warns before the member is removed, naming the job that holds it up.

Long-running topics do not need it (their partitions are paused and polling goes on).
Pure bookkeeping: the listener thread calls every method.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable

from kafka_jobs.instrumentation.events import EventBus

log = logging.getLogger("kafka_jobs.pollguard")

SAFETY = 0.7
"""Share of max.poll.interval.ms a batch may use (30 % margin for pauses and spikes)."""

_WINDOW = 1000


class PollIntervalGuard:
    """Measures blocking jobs, warns before the poll interval is exceeded, sizes batches."""

    def __init__(
        self,
        group: str,
        max_poll_interval_ms: int,
        batch_size: int,
        adaptive: bool,
        events: EventBus,
    ) -> None:
        self.group = group
        self.budget = max_poll_interval_ms / 1000 * SAFETY
        self.max_batch = batch_size
        # Adaptive batches start small and double while they fit: the first batch of
        # an unknown topic must not be the one that gets the member removed.
        self.batch_size = 1 if adaptive else batch_size
        self.adaptive = adaptive
        self._reviewed_at = -math.inf
        self.events = events
        self._durations: dict[str, deque[float]] = {}
        self._warned_topics: set[str] = set()
        self._stall_warned = False

    def observe(self, topic: str, durations: Iterable[float]) -> None:
        """Record how long each job of a finished blocking batch took."""
        window = self._durations.get(topic)
        if window is None:
            window = self._durations[topic] = deque(maxlen=_WINDOW)
        window.extend(durations)

    def p99(self, topic: str) -> float | None:
        """The 99th percentile job time of a topic, in seconds; None before any job."""
        window = self._durations.get(topic)
        if not window:
            return None
        ordered = sorted(window)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def review(self, topics: Iterable[str], now: float) -> None:
        """After jobs finished: warn about (or adapt to) topics whose batches would be too slow.

        At most once per second (`now` is monotonic seconds): sorting the window is not free.
        """
        if now - self._reviewed_at < 1.0 and not (self.adaptive and self.batch_size < 8):
            return
        self._reviewed_at = now
        worst: float | None = None
        for topic in topics:
            p99 = self.p99(topic)
            if p99 is None:
                continue
            worst = p99 if worst is None else max(worst, p99)
            fits = self.fitting_batch(p99)
            if self.batch_size * p99 > self.budget and topic not in self._warned_topics:
                self._warned_topics.add(topic)
                log.warning(
                    "poll-interval trap on topic %s (group %s): %d records x p99 %.3fs ="
                    " %.1fs per batch, over %.0f%% of max.poll.interval.ms (%.1fs); a batch"
                    " of %d fits%s. Or mark the topic long_running.",
                    topic,
                    self.group,
                    self.batch_size,
                    p99,
                    self.batch_size * p99,
                    SAFETY * 100,
                    self.budget / SAFETY,
                    fits,
                    "; shrinking batches to it" if self.adaptive else " (set adaptive_batch)",
                )
                self.events.emit(
                    "poll_interval.warning",
                    group=self.group,
                    topic=topic,
                    batch_size=self.batch_size,
                    p99=p99,
                    fitting_batch=fits,
                )
        if self.adaptive and worst is not None:
            self._adapt(worst)

    def fitting_batch(self, p99: float) -> int:
        """The largest batch whose p99 time stays within the budget (at least 1)."""
        if p99 <= 1e-9:  # no clock measures less; also avoids dividing into infinity
            return self.max_batch
        return max(1, min(self.max_batch, int(self.budget / p99)))

    def _adapt(self, p99: float) -> None:
        # Shrink at once to what fits; grow at most twofold per review.
        size = min(self.fitting_batch(p99), self.batch_size * 2)
        if size != self.batch_size:
            log.info(
                "group %s: batch size %d -> %d (p99 %.3fs)", self.group, self.batch_size, size, p99
            )
            self.events.emit("poll_interval.batch_size", group=self.group, batch_size=size, p99=p99)
            self.batch_size = size

    def watch(self, seconds_since_poll: float, holder: str) -> None:
        """While blocking jobs run: warn once per stall before the member would be removed."""
        if seconds_since_poll <= self.budget:
            self._stall_warned = False
            return
        if self._stall_warned:
            return
        self._stall_warned = True
        limit = self.budget / SAFETY
        log.warning(
            "group %s has not polled for %.1fs while %s runs; at %.1fs (max.poll.interval.ms)"
            " the member leaves the group and the batch runs again elsewhere. Use a smaller"
            " batch, adaptive_batch, or long_running for this topic.",
            self.group,
            seconds_since_poll,
            holder,
            limit,
        )
        self.events.emit(
            "poll_interval.stalling",
            group=self.group,
            seconds_since_poll=seconds_since_poll,
            limit=limit,
            holder=holder,
        )
