"""Choosing delay tiers: the longest tier that does not pass the due time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.delay.tiers import (
    DUE_SLACK_MS,
    TIERS,
    next_hop,
    with_delay_headers,
    without_delay_headers,
)


def test_due_jobs_have_no_hop() -> None:
    assert next_hop(1000, 1000) is None
    assert next_hop(1000, 1000 + DUE_SLACK_MS) is None
    assert next_hop(5000, 1000) is None


def test_short_waits_use_the_shortest_tier_until_exactly_due() -> None:
    assert next_hop(0, 300) == (TIERS[0], 300)


def test_long_waits_use_the_longest_fitting_tier() -> None:
    assert next_hop(0, 5_000) == (4, 4_000)
    assert next_hop(0, 64_000) == (64, 64_000)
    assert next_hop(0, 10 * 86_400_000) == (TIERS[-1], TIERS[-1] * 1000)


@given(st.integers(0, 10**12), st.integers(DUE_SLACK_MS + 1, 30 * 86_400_000))
def test_a_hop_never_passes_the_due_time_and_always_progresses(now: int, wait: int) -> None:
    eta = now + wait
    hop = next_hop(now, eta)
    assert hop is not None
    seconds, not_before = hop
    assert seconds in TIERS
    assert now < not_before <= eta


@given(st.integers(DUE_SLACK_MS + 1, 30 * 86_400_000))
def test_following_hops_reach_the_due_time_in_few_steps(wait: int) -> None:
    now, eta, hops = 0, wait, 0
    while (hop := next_hop(now, eta)) is not None:
        now = hop[1]
        hops += 1
        # Whole top-tier hops, then at most three hops per smaller tier.
        assert hops <= wait // (TIERS[-1] * 1000) + 3 * len(TIERS)
    assert eta - DUE_SLACK_MS <= now <= eta


def test_delay_headers_are_replaced_and_removed() -> None:
    base = [("kj-task", b"t"), ("kj-eta", b"1")]
    delayed = with_delay_headers(base, 99, "orders", 50)
    assert delayed == [
        ("kj-task", b"t"),
        ("kj-eta", b"99"),
        ("kj-target-topic", b"orders"),
        ("kj-not-before", b"50"),
    ]
    assert without_delay_headers(delayed) == [("kj-task", b"t")]
