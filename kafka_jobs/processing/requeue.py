"""Re-enqueueing a failed job for its retry through the delay tiers, so its partition goes on.

The copy keeps the record's value, key and headers (job id, trace, expiry,
canvas) and carries the next attempt number and the first failure's time, so
the run it gets knows its attempt and is retried or dead-lettered as if it had
waited in place. Only the record's own topic is written to (after the wait);
the partition is chosen by the key, as the first time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import Message

from kafka_jobs.delay.tiers import next_hop, tier_topic, with_delay_headers
from kafka_jobs.wire import now_ms, read_job_id, retried_headers

if TYPE_CHECKING:
    from kafka_jobs.processing.ports import RecordWriter


def requeue(
    writer: RecordWriter,
    record: Message,
    *,
    attempt: int,
    first_failed_ms: int,
    delay: float,
    delay_prefix: str,
    timeout: float,
) -> str:
    """Write the retry of `record` (whose `attempt`-th run failed), due in `delay` seconds.

    Returns the topic written to (a delay tier, or the record's topic when the
    wait is already over). Returns only once the broker acknowledged the copy.

    Raises:
        DeliveryError: not acknowledged within `timeout` seconds.
        EnqueueError: the writer could not take it.
    """
    now = now_ms()
    due = now + int(delay * 1000)
    target = str(record.topic())
    headers = retried_headers(record.headers(), attempt + 1, first_failed_ms)
    hop = next_hop(now, due)
    topic = target
    if hop is not None:
        seconds, not_before = hop
        headers = with_delay_headers(headers, due, target, not_before)
        topic = tier_topic(delay_prefix, seconds)
    job_id = read_job_id(record.headers()) or ""
    writer.enqueue(topic, job_id, record.value(), record.key(), headers).wait(timeout)
    return topic
