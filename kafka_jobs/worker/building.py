"""Fetched records into jobs: one job per partition batch, or one per lane.

Listener thread only. A partition whose lanes collapsed (a lane failed) runs
sequentially until the collapsed batch is done, so retries and dead letters
apply to exactly the failing record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import cast

from confluent_kafka import Message

from kafka_jobs.connection.client import Key
from kafka_jobs.options import TopicOptions
from kafka_jobs.processing.jobs import Job, LaneBatch, PartitionState
from kafka_jobs.processing.lanes import split

log = logging.getLogger("kafka_jobs.listener")

REGULAR = TopicOptions()


class JobBuilder:
    """Builds one group's jobs. Listener thread only."""

    def __init__(
        self,
        group: str,
        topics: Mapping[str, TopicOptions],
        concurrency: int,
        group_metadata: Callable[[], object],
    ) -> None:
        self.group = group
        self.topics = topics
        self.concurrency = concurrency
        self._group_metadata = group_metadata
        # Partitions whose lanes collapsed: run sequentially until this offset is done.
        self.collapsed: dict[Key, int] = {}

    def options(self, topic: str) -> TopicOptions:
        """How `topic` is consumed (regular when not declared)."""
        return self.topics.get(topic) or REGULAR

    def build(self, key: Key, state: PartitionState, batch: list[Message]) -> list[Job]:
        """Register a partition's fetched batch and return the jobs for what is not done yet."""
        tracker = state.tracker
        # One cast per batch: records of a fetched batch always carry their offset.
        offsets = cast(list[int], [record.offset() for record in batch])
        first = offsets[0]
        last = tracker.last_registered
        mark = tracker.committable()
        if (last is not None and first <= last) or (mark is not None and first < mark):
            # The position moved backwards (offset reset, an overridden seek).
            log.warning("%s[%d] went back to offset %d; re-running from there", *key, first)
            tracker.rewind(first)
        # Offsets known done before registering (collapse re-runs, commit metadata) may
        # be in this batch; without any, none of it is done (all of it lies at or
        # above the mark), and the batch is one job as it came.
        known_done = tracker.any_done_above
        tracker.register(offsets)
        if known_done:
            # Registered so the committed offset can pass them, but not run again.
            todo = [r for r, o in zip(batch, offsets, strict=True) if not tracker.is_done(o)]
            return self._jobs_for(key, state, todo) if todo else []
        return self._jobs_for(key, state, batch)

    def _jobs_for(self, key: Key, state: PartitionState, records: list[Message]) -> list[Job]:
        options = self.options(key[0])
        blocking, manual = not options.long_running, options.manual_offsets
        virtual = options.virtual_partitions
        collapsed_until = self.collapsed.get(key)
        mark = state.tracker.committable()
        # Behind us only once the mark passed it: lanes that did not fail may have
        # finished the batch's last offset while the failed record is still to run.
        if collapsed_until is not None and mark is not None and mark > collapsed_until:
            del self.collapsed[key]  # the collapsed batch is behind us: back to lanes
            collapsed_until = None
        if virtual is None or collapsed_until is not None:
            job = Job(self.group, state, records, blocking=blocking, manual=manual)
            if virtual is None:  # only then can a transaction carry the record's offset
                job.group_metadata = self._group_metadata()
            return [job]
        lanes = split(records, virtual, virtual.max_partitions or self.concurrency)
        batch = LaneBatch(cast(int, records[-1].offset()))
        batch.lanes = [
            Job(self.group, state, lane, blocking=blocking, manual=manual, batch=batch)
            for lane in lanes
        ]
        batch.left = len(batch.lanes)
        return batch.lanes
