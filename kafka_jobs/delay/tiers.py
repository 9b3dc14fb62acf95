"""Delayed jobs, Kafka-native: delay-tier topics instead of records held in worker memory.

A job with `countdown` / `eta` is written to the tier topic whose fixed delay is
the largest one not past its due time, e.g. `kafka-jobs.delay.64s`. Every record
of one tier waits the same time, so each tier partition is ordered by due time
and the dispatcher (a thread of every worker) needs to look only at its head:
it pauses the partition until the head is due, then moves the record to the
next smaller tier or, once due, to its real topic. Memory stays bounded however
many jobs wait; a crash loses none (offsets are committed after the move is
acknowledged) and the jobs' real topics never hold a delayed record, so nothing
queued behind one waits for it. Moves are at-least-once: a crash between a move
and its commit can dispatch a job twice.

`handle.cancel()` writes the job id to `<prefix>.cancelled`; the dispatcher
drops a cancelled job instead of moving it (best effort until about a second
before its due time).

Headers added to a delayed record: ``kj-eta`` (due, ms since the epoch),
``kj-target-topic`` (the real topic) and ``kj-not-before`` (when the current
tier releases it, ms). They are removed when the job reaches its topic.
"""

from __future__ import annotations

from kafka_jobs.wire import H_ETA, H_NOT_BEFORE, H_TARGET, Headers

TIERS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
"""Tier delays in seconds (about 18 hours at the top; longer waits take several hops)."""

DELAY_HEADERS = (H_ETA, H_TARGET, H_NOT_BEFORE)

DUE_SLACK_MS = 0
"""A job is dispatched once it is due, never earlier ("runs no earlier than its eta")."""


def tier_topic(prefix: str, seconds: int) -> str:
    """The topic of one delay tier."""
    return f"{prefix}.{seconds}s"


def tier_topics(prefix: str) -> list[str]:
    """Every tier topic, shortest delay first."""
    return [tier_topic(prefix, seconds) for seconds in TIERS]


def cancel_topic(prefix: str) -> str:
    """Where cancellations are written (key: job id, value: due time ms)."""
    return f"{prefix}.cancelled"


def next_hop(now_ms: int, eta_ms: int) -> tuple[int, int] | None:
    """Where a job due at `eta_ms` goes at `now_ms`: (tier seconds, not-before ms), or None if due.

    The tier is the longest one that does not pass the due time; a job due in
    less than the shortest tier waits in the shortest one until exactly its due time.
    """
    remaining = eta_ms - now_ms
    if remaining <= DUE_SLACK_MS:
        return None
    fitting = [seconds for seconds in TIERS if seconds * 1000 <= remaining]
    if not fitting:
        return TIERS[0], eta_ms
    seconds = fitting[-1]
    return seconds, now_ms + seconds * 1000


def with_delay_headers(headers: Headers, eta_ms: int, target: str, not_before_ms: int) -> Headers:
    """`headers` with the delay headers set (replacing older ones)."""
    kept = [(name, value) for name, value in headers if name not in DELAY_HEADERS]
    return [
        *kept,
        (H_ETA, str(eta_ms).encode()),
        (H_TARGET, target.encode()),
        (H_NOT_BEFORE, str(not_before_ms).encode()),
    ]


def without_delay_headers(headers: Headers) -> Headers:
    """`headers` as the job's real topic should see them."""
    return [(name, value) for name, value in headers if name not in DELAY_HEADERS]
