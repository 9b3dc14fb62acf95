"""Celery tasks with a far eta wait in kafka-jobs' delay tiers, not behind a held offset.

On kombu's brokers a task published with ``countdown=`` / ``eta=`` goes to its queue
at once; the worker receives it and keeps it unacked in memory until the eta. On Kafka
that would hold the partition's committed offset back for as long (acks are
lowest-contiguous), and memory would grow with the number of scheduled tasks.

So when a message's Celery ``eta`` header lies more than ``eta_threshold`` seconds
ahead, `basic_publish` writes it to the delay tier topic `kafka_jobs.delay.tiers`
picks (``<delay_topic_prefix>.<N>s``), with the delay headers naming the queue's topic
as the target. Every kombu and Celery header and the body are kept: when the delay
dispatcher (see `celery_bridge.dispatching`) moves the record to the queue topic at
its due time, it is the ordinary Celery message that was published; its eta is now
or just past, so Celery runs it at once (and if it comes early, Celery's own eta
handling waits the rest). Expiry, retries and countdown-based retries keep Celery's
meaning: the message is unchanged.

An eta without a timezone is left to Celery (published to the queue as before):
Celery reads it in the app's timezone, which the transport does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kafka_jobs.delay.tiers import next_hop, tier_topic, with_delay_headers
from kafka_jobs.wire import Headers

#: The Celery message header (protocol 2) holding the eta, ISO 8601.
ETA_HEADER = "eta"


@dataclass(frozen=True, slots=True)
class DelayHop:
    """Where a delayed message is written first, and when it is due.

    topic: the delay tier topic.
    due_ms: the eta, milliseconds since the epoch.
    not_before_ms: when the tier releases the record (its next hop, or its queue).
    """

    topic: str
    due_ms: int
    not_before_ms: int

    def headers(self, headers: Headers, target: str) -> Headers:
        """The record's `headers` plus the delay headers that send it to `target` when due."""
        return with_delay_headers(headers, self.due_ms, target, self.not_before_ms)


def eta_ms(message_headers: Mapping[str, object]) -> int | None:
    """The Celery ``eta`` header in milliseconds since the epoch.

    None when there is none, it is not an ISO 8601 time, or it has no timezone.
    """
    raw = message_headers.get(ETA_HEADER)
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str) and raw:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return None
    return int(when.timestamp() * 1000)


def delay_hop(
    message_headers: Mapping[str, object],
    now_ms: int,
    threshold: float | None,
    prefix: str,
) -> DelayHop | None:
    """The delay tier a message goes to, or None when it goes to its queue now.

    Args:
        message_headers: the kombu message's headers (Celery's ``eta`` among them).
        now_ms: the current time, milliseconds since the epoch.
        threshold: seconds; only an eta further ahead than this is delayed. None:
            nothing is.
        prefix: the delay topic prefix.

    Returns:
        The first hop of a message whose eta lies more than `threshold` ahead, else None.
    """
    if threshold is None:
        return None
    due = eta_ms(message_headers)
    if due is None or due - now_ms <= threshold * 1000:
        return None
    hop = next_hop(now_ms, due)
    if hop is None:
        return None
    seconds, not_before = hop
    return DelayHop(tier_topic(prefix, seconds), due, not_before)
