"""The event bus: the one instrumentation channel. Logs, metrics and tests subscribe.

Event names (payload keys in parentheses):

- ``job.started`` (topic, partition, offset, job_id, task, attempt)
- ``job.succeeded`` (topic, partition, offset, job_id, task, duration)
- ``job.failed`` (topic, partition, offset, job_id, task, error, attempt, duration)
- ``job.retrying`` (topic, partition, offset, job_id, task, attempt, error, reason, delay,
  how): `how` is "paused" (the partition waits) or "requeued" (re-enqueued through
  the delay tiers, acknowledged)
- ``retry.requeue_failed`` (topic, partition, offset, job_id, task, attempt, error,
  reason, write_error): the re-enqueue of a retry was not acknowledged; tried again
- ``job.dead_lettered`` (topic, partition, offset, job_id, task, attempt, error, reason,
  dead_letter_topic)
- ``dead_letter.failed`` (topic, partition, offset, job_id, task, attempt, error, reason,
  write_error)
- ``record.rejected`` (topic, partition, offset, error): the record is not a runnable job
- ``job.skipped`` (topic, partition, offset): it did not run and is not done: its
  partition was revoked, the worker stops, or its lane batch collapsed
- ``partitions.assigned`` / ``partitions.revoked`` / ``partitions.lost`` (group, partitions)
- ``offsets.committed`` (group, offsets)
- ``topics.subscribed`` (group, topics): a topic pattern selected a new set of topics
- ``group.reset`` (group, dropped): a recovery reset of a subscription group's connection
- ``worker.error`` (where, error): an internal error that was caught and survived
- ``hook.failed`` (kind, topic, partition, error): a lifecycle hook raised (logged; the
  partition goes on)
- ``job.cancelled`` (job_id, topic): the delay dispatcher dropped a cancelled delayed job
- ``job.expired`` / ``job.revoked`` (topic, partition, offset, job_id, task, error): the
  job was not started, being past its ``expires`` time / revoked (`App.revoke`); a
  ``job.revoked`` whose error is a `JobTerminated` was ended while it ran (terminate=True)
- ``job.time_limited`` (topic, partition, offset, job_id, task, limit): the running job
  passed its soft (``limit="soft"``: `SoftTimeLimitExceeded` raised in it) or hard
  (``"hard"``: ended, failed with reason ``time-limit``) time limit
- ``job.rate_limited`` (topic, partition, offset, job_id, task, rate_limit, delay): the job
  waits `delay` seconds for its task's rate-limit token (not run yet, not an attempt)
- ``partition.throttled`` (topic, partition, offset, limit, interval, delay): topic
  throttling paused the partition; it fetches again from `offset` after `delay` seconds
- ``poll_interval.warning`` (group, topic, batch_size, p99, fitting_batch): a batch's p99
  run time would outlast ``max.poll.interval.ms``
- ``poll_interval.batch_size`` (group, batch_size, p99): adaptive batching changed the size
- ``poll_interval.stalling`` (group, seconds_since_poll, limit, holder): blocking jobs have
  kept the group from polling past the safe share of ``max.poll.interval.ms``
- ``schedule.leading`` (group, schedules), ``schedule.fired`` (schedule, fire_time, job_id,
  trigger), ``schedule.command`` (schedule, op, offset), ``schedule.unknown_job`` (schedule,
  task, group): recurring jobs (``kafka_jobs.recurring.leader``)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("kafka_jobs.events")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened; `payload` keys depend on `name`."""

    name: str
    payload: dict[str, Any]  # per event name: subscribers read the fields that event has


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out of events to subscribers.

    Thread-safe. Subscribers run on the emitting thread (often a worker or the
    listener), so they must be fast and must not raise; one that raises is logged.
    """

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                subscribers = list(self._subscribers)
                for index, existing in enumerate(subscribers):
                    if (
                        existing is subscriber
                    ):  # only this subscription, not others of the same callable
                        del subscribers[index]
                        break
                self._subscribers = tuple(subscribers)

        return unsubscribe

    @property
    def active(self) -> bool:
        """True when someone listens; lets hot paths skip building payloads."""
        return bool(self._subscribers)

    def emit(self, name: str, **payload: Any) -> None:
        """Deliver an event to every subscriber."""
        subscribers = self._subscribers
        if not subscribers:
            return
        event = Event(name, payload)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, name)
