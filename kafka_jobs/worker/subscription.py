"""A subscription group's topics: a fixed list, or what a topic pattern selects now.

With a pattern, the cluster's topics are listed every `pattern_refresh_interval`
and the subscription follows; a newly selected topic gets its consumption
options before the first record of it is fetched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException

from kafka_jobs.connection.client import Client, Key
from kafka_jobs.connection.commits import Committer
from kafka_jobs.connection.pauses import PauseTracker
from kafka_jobs.options import TopicOptions
from kafka_jobs.patterns import TopicPattern
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.settings import Settings

log = logging.getLogger("kafka_jobs.listener")


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """One owned partition as its listener sees it."""

    group: str
    topic: str
    partition: int
    committable: int | None
    committed: int | None
    jobs_running: int
    done_above: int
    paused: bool


@dataclass(frozen=True, slots=True)
class SubscriptionGroup:
    """Topics that share one consumer connection (and so one poll loop)."""

    name: str
    topics: tuple[str, ...]
    pattern: TopicPattern | None = None
    """Also consume the existing topics it selects, checked every `pattern_refresh_interval`."""


class PatternFollower:
    """Keeps a pattern's selection current. Listener thread only."""

    def __init__(
        self,
        name: str,
        pattern: TopicPattern,
        topics: dict[str, TopicOptions],
        interval: float,
        consumption_of: Callable[[str], TopicOptions] | None,
        on_new_topics: Callable[[list[str]], None] | None,
    ) -> None:
        self.name = name
        self.pattern = pattern
        self.topics = topics
        self.interval = interval
        self._consumption_of = consumption_of
        self._on_new_topics = on_new_topics
        self._checked = 0.0

    @classmethod
    def of(
        cls,
        group: SubscriptionGroup,
        topics: dict[str, TopicOptions],
        settings: Settings,
        consumption_of: Callable[[str], TopicOptions] | None,
        on_new_topics: Callable[[list[str]], None] | None,
    ) -> PatternFollower | None:
        """The follower of a group's pattern, or None for a group with a fixed topic list."""
        if group.pattern is None:
            return None
        interval = settings.pattern_refresh_interval
        return cls(group.name, group.pattern, topics, interval, consumption_of, on_new_topics)

    def due(self) -> bool:
        """Time to list the cluster's topics again."""
        return time.monotonic() - self._checked >= self.interval

    def select(self, client: Client, subscribed: tuple[str, ...]) -> list[str] | None:
        """What the pattern selects now, or None when that is what is subscribed (or unknown)."""
        self._checked = time.monotonic()
        try:
            existing = client.topic_names(timeout=5)
        except KafkaException as exc:  # the broker is away: keep the subscription as it is
            log.warning("cannot list topics for the pattern of %s: %s", self.name, exc)
            return None
        wanted = self.pattern.select(existing)
        if tuple(wanted) == subscribed:
            return None
        new = sorted(set(wanted) - set(subscribed))
        for topic in new:
            if topic not in self.topics and self._consumption_of is not None:
                self.topics[topic] = self._consumption_of(topic)
        if new and self._on_new_topics is not None:
            self._on_new_topics(new)
        log.info(
            "subscription group %s: pattern %r selects %s",
            self.name,
            self.pattern.regex.pattern,
            ", ".join(wanted) or "no topic yet",
        )
        return wanted


def partition_reports(
    group: str,
    states: dict[Key, PartitionState],
    in_flight: list[Job],
    committer: Committer,
    pauses: PauseTracker,
) -> list[PartitionReport]:
    """The owned partitions of a listener; jobs_running counts unfinished jobs (busy lanes)."""
    running: dict[Key, int] = {}
    for job in in_flight:
        if not job.finished:
            key = (job.topic, job.partition)
            running[key] = running.get(key, 0) + 1
    return [
        PartitionReport(
            group=group,
            topic=key[0],
            partition=key[1],
            committable=state.tracker.committable(),
            committed=committer.committed(key),
            jobs_running=running.get(key, 0),
            done_above=len(state.tracker.done_above()),
            paused=key in pauses,
        )
        for key, state in sorted(states.items())
    ]
