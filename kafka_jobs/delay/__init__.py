"""Delayed jobs: the delay-tier topics (`tiers`) and the dispatcher thread that moves them.

The names below are re-exported from `tiers` so callers need not know the split;
the dispatcher is imported from `kafka_jobs.delay.dispatcher` by the worker only.
"""

from kafka_jobs.delay.tiers import (
    cancel_topic,
    next_hop,
    tier_topic,
    tier_topics,
    with_delay_headers,
    without_delay_headers,
)

__all__ = [
    "cancel_topic",
    "next_hop",
    "tier_topic",
    "tier_topics",
    "with_delay_headers",
    "without_delay_headers",
]
