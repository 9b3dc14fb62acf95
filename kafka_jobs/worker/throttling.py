"""Topic throttling per partition, and re-queueing jobs held by a rate limit. Listener thread.

A throttled topic (`configure_topic(topic, throttle=(limit, interval))`) lets
each partition start at most `limit` jobs per window of `interval` seconds.
The window opens with the first record admitted; records fetched beyond the
limit are not registered and the partition pauses until the window ends, then
fetches again from the first of them. Nothing is dropped, other partitions go
on. A job that ran past the limit (a long-running topic's job resumes its
partition when it ends) is met by a full window at the next fetch and pauses
the partition again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Message

from kafka_jobs.connection.client import Key
from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.options import TopicOptions
from kafka_jobs.processing.jobs import Job


class Throttles:
    """Each throttled partition's window: (opened at, jobs admitted). Listener thread only.

    options: how a topic is consumed (its `throttle`).
    pause: the listener's pause (key, until monotonic, offset to fetch from).
    """

    def __init__(
        self,
        options: Callable[[str], TopicOptions],
        pause: Callable[[Key, float, int], None],
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._pause = pause
        self._events = events
        self._clock = clock
        self._windows: dict[Key, tuple[float, int]] = {}

    def admit(self, key: Key, batch: list[Message]) -> list[Message]:
        """The records of a fetched batch the partition may start now; pauses it for the rest."""
        throttle = self._options(key[0]).throttle
        if throttle is None:
            return batch
        now = self._clock()
        opened, used = self._windows.get(key, (now, 0))
        if now >= opened + throttle.interval:
            opened, used = now, 0
        allowed = max(0, throttle.limit - used)
        admitted = batch[:allowed]
        self._windows[key] = (opened, used + len(admitted))
        if len(admitted) < len(batch):
            until = opened + throttle.interval
            offset = int(batch[len(admitted)].offset() or 0)
            self._pause(key, until, offset)
            self._events.emit(
                "partition.throttled",
                topic=key[0],
                partition=key[1],
                offset=offset,
                limit=throttle.limit,
                interval=throttle.interval,
                delay=until - now,
            )
        return admitted

    def forget(self, keys: list[Key]) -> None:
        """Drop the windows of partitions that left."""
        for key in keys:
            self._windows.pop(key, None)


def requeue(job: Job) -> Job:
    """The rest of a rate-limited regular job (or lane), as a job that does not hold back polling.

    Its records stay in memory and registered in the partition's offset tracker
    (not done, so never committed before they run); scheduling it pauses the
    partition until it ends (for a lane: until its whole batch ended), like a
    long-running job, and the executor suspends it off its thread while it waits
    for tokens (`processing.limiting`). It starts at the held record, or earlier
    where an outcome write failed (`resume_from`).
    """
    start = job.resume_from
    if start is None:
        start = int(job.records[job.processed].offset() or 0)
    records = [record for record in job.records if int(record.offset() or 0) >= start]
    rest = Job(job.group_id, job.state, records, blocking=False, batch=job.batch)
    rest.manual = job.manual
    rest.group_metadata = job.group_metadata
    if job.batch is not None:  # the batch ends when its lanes do: this one in its place
        lanes = job.batch.lanes
        lanes[lanes.index(job)] = rest
    return rest
