"""The poll-interval guard: p99 bookkeeping, trap warnings, adaptive batches, stall watch."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_jobs.instrumentation.events import Event, EventBus
from kafka_jobs.worker.pollguard import SAFETY, PollIntervalGuard

LIMIT_MS = 10_000
BUDGET = LIMIT_MS / 1000 * SAFETY  # 7.0 s


def make(
    batch_size: int = 100, adaptive: bool = False, limit_ms: int = LIMIT_MS
) -> tuple[PollIntervalGuard, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    return PollIntervalGuard("grp", limit_ms, batch_size, adaptive, bus), events


def named(events: list[Event], name: str) -> list[Event]:
    return [event for event in events if event.name == name]


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "kafka_jobs.pollguard" and r.levelno == logging.WARNING
    ]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kafka_jobs.pollguard")


# --- construction and p99 ------------------------------------------------------------------


def test_budget_is_seventy_percent_of_the_limit() -> None:
    guard, _ = make()
    assert SAFETY == 0.7
    assert guard.budget == pytest.approx(7.0)
    assert guard.batch_size == guard.max_batch == 100


def test_adaptive_starts_at_one() -> None:
    guard, _ = make(batch_size=500, adaptive=True)
    assert guard.batch_size == 1
    assert guard.max_batch == 500


def test_p99_is_none_before_any_job() -> None:
    guard, _ = make()
    assert guard.p99("t") is None
    guard.observe("t", [])
    assert guard.p99("t") is None
    assert guard.p99("other") is None


def test_p99_of_one_to_a_hundred_is_ninety_nine() -> None:
    guard, _ = make()
    guard.observe("t", [float(i) for i in range(100, 0, -1)])  # order does not matter
    assert guard.p99("t") == 99.0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5], 0.5),
        ([1.0, 2.0], 2.0),
        ([3.0] * 10, 3.0),
        ([float(i) for i in range(1, 1001)], 990.0),
        ([float(i) for i in range(1, 201)], 198.0),
        ([0.1] * 98 + [5.0, 9.0], 5.0),
        ([0.1] * 99 + [9.0], 0.1),  # one outlier in 100 is the top 1 %
    ],
)
def test_p99_nearest_rank(values: list[float], expected: float) -> None:
    guard, _ = make()
    guard.observe("t", values)
    assert guard.p99("t") == expected


def test_p99_accumulates_across_batches_per_topic() -> None:
    guard, _ = make()
    guard.observe("a", [1.0] * 50)
    guard.observe("b", [100.0])
    guard.observe("a", [2.0] * 50)
    assert guard.p99("a") == 2.0
    assert guard.p99("b") == 100.0


def test_p99_window_keeps_the_last_thousand() -> None:
    guard, _ = make()
    guard.observe("t", [50.0] * 1000)
    guard.observe("t", iter([1.0] * 1000))  # any iterable
    assert guard.p99("t") == 1.0


@given(values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=1500))
def test_p99_property_nearest_rank(values: list[float]) -> None:
    guard, _ = make()
    guard.observe("t", values)
    window = values[-1000:]
    p99 = guard.p99("t")
    assert p99 in window
    n = len(window)
    at_or_below = sum(v <= p99 for v in window)
    below = sum(v < p99 for v in window)
    # Smallest value with at least 99 % of the window at or below it.
    assert Fraction(at_or_below, n) >= Fraction(99, 100)
    assert Fraction(below, n) < Fraction(99, 100)


# --- fitting_batch -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p99", "fits"),
    [(0.0, 100), (-1.0, 100), (0.001, 100), (0.05, 100), (0.1, 70), (1.0, 7), (7.0, 1), (60.0, 1)],
)
def test_fitting_batch(p99: float, fits: int) -> None:
    guard, _ = make(batch_size=100)
    assert guard.fitting_batch(p99) == fits


@given(p99=st.floats(1e-6, 1e4), batch=st.integers(1, 10_000))
def test_fitting_batch_property(p99: float, batch: int) -> None:
    guard, _ = make(batch_size=batch)
    fits = guard.fitting_batch(p99)
    assert 1 <= fits <= batch
    if fits > 1:
        assert fits * p99 <= guard.budget * (1 + 1e-9)
    if fits < batch:
        assert (fits + 1) * p99 > guard.budget * (1 - 1e-9)


# --- review: warnings (fixed batch) --------------------------------------------------------


def test_warns_once_per_topic_when_the_batch_is_too_slow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard, events = make(batch_size=100)
    guard.observe("slow", [0.1] * 100)  # 100 x 0.1 s = 10 s > 7 s
    guard.review(["slow"], now=0.0)
    warned = named(events, "poll_interval.warning")
    assert [e.payload for e in warned] == [
        {"group": "grp", "topic": "slow", "batch_size": 100, "p99": 0.1, "fitting_batch": 70}
    ]
    [record] = warnings_in(caplog)
    message = record.getMessage()
    assert "slow" in message and "grp" in message
    assert "a batch of 70 fits" in message
    assert "adaptive_batch" in message
    # Once per topic: later reviews stay quiet.
    for now in (5.0, 10.0, 20.0):
        guard.observe("slow", [0.2] * 10)
        guard.review(["slow"], now=now)
    assert len(named(events, "poll_interval.warning")) == 1
    assert len(warnings_in(caplog)) == 1
    assert guard.batch_size == 100  # not adaptive: the batch is left alone


def test_each_topic_warns_on_its_own() -> None:
    guard, events = make(batch_size=100)
    guard.observe("a", [0.5])
    guard.observe("b", [0.5])
    guard.observe("fast", [0.001])
    guard.review(["a", "fast"], now=0.0)
    guard.review(["a", "b", "fast"], now=2.0)
    assert [e.payload["topic"] for e in named(events, "poll_interval.warning")] == ["a", "b"]


def test_no_warning_when_it_fits(caplog: pytest.LogCaptureFixture) -> None:
    guard, events = make(batch_size=100)
    guard.observe("ok", [0.06] * 100)  # 100 x 0.06 = 6 s < 7 s
    guard.review(["ok"], now=0.0)
    guard.observe("ok", [0.01] * 100)
    guard.review(["ok"], now=2.0)
    assert events == []
    assert warnings_in(caplog) == []


def test_no_warning_for_unmeasured_topics() -> None:
    guard, events = make(batch_size=100)
    guard.review(["never-seen"], now=0.0)
    assert events == []


def test_review_is_rate_limited_to_once_per_second() -> None:
    guard, events = make(batch_size=100)
    guard.observe("fine", [0.01])
    guard.review(["fine"], now=100.0)
    guard.observe("slow", [1.0])
    guard.review(["slow"], now=100.5)  # within a second of the last review: skipped
    guard.review(["slow"], now=100.999)
    assert events == []
    guard.review(["slow"], now=101.0)
    assert [e.payload["topic"] for e in named(events, "poll_interval.warning")] == ["slow"]


def test_first_review_is_never_rate_limited() -> None:
    guard, events = make(batch_size=100)
    guard.observe("slow", [1.0])
    guard.review(["slow"], now=-1e9)
    assert len(events) == 1


# --- review: adaptive batches --------------------------------------------------------------


def sizes(events: list[Event]) -> list[int]:
    return [e.payload["batch_size"] for e in named(events, "poll_interval.batch_size")]


def test_adaptive_grows_at_most_twofold_per_review_up_to_what_fits() -> None:
    guard, events = make(batch_size=100, adaptive=True)
    guard.observe("t", [0.1])  # fits 70
    now = 0.0
    seen = []
    for _ in range(12):
        guard.review(["t"], now=now)
        seen.append(guard.batch_size)
        now += 1.0
    assert seen == [2, 4, 8, 16, 32, 64, 70, 70, 70, 70, 70, 70]
    assert sizes(events) == [2, 4, 8, 16, 32, 64, 70]
    assert named(events, "poll_interval.warning") == []
    event = named(events, "poll_interval.batch_size")[0]
    assert event.payload == {"group": "grp", "batch_size": 2, "p99": 0.1}


def test_adaptive_never_exceeds_the_configured_batch() -> None:
    guard, _ = make(batch_size=20, adaptive=True)
    guard.observe("t", [0.0001])
    for step in range(30):
        guard.review(["t"], now=float(step))
        assert guard.batch_size <= 20
    assert guard.batch_size == 20


def test_adaptive_with_zero_duration_jobs_grows_to_max() -> None:
    guard, _ = make(batch_size=10, adaptive=True)
    guard.observe("t", [0.0])
    for step in range(10):
        guard.review(["t"], now=float(step))
    assert guard.batch_size == 10


def test_adaptive_shrinks_at_once_to_what_fits(caplog: pytest.LogCaptureFixture) -> None:
    guard, events = make(batch_size=100, adaptive=True)
    guard.observe("t", [0.01])
    for step in range(10):
        guard.review(["t"], now=float(step))
    assert guard.batch_size == 100
    guard.observe("t", [2.0] * 100)  # p99 2 s: 3 fit in 7 s
    guard.review(["t"], now=20.0)
    assert guard.batch_size == 3
    assert sizes(events)[-1] == 3
    [warning] = named(events, "poll_interval.warning")
    assert warning.payload["batch_size"] == 100  # warned about the batch that was too slow
    assert warning.payload["fitting_batch"] == 3
    assert "shrinking batches to it" in warnings_in(caplog)[0].getMessage()


def test_adaptive_follows_the_slowest_topic() -> None:
    guard, _ = make(batch_size=100, adaptive=True)
    guard.observe("fast", [0.001])
    guard.observe("slow", [1.0])  # fits 7
    for step in range(10):
        guard.review(["fast", "slow"], now=float(step))
    assert guard.batch_size == 7


def test_adaptive_one_job_slower_than_the_budget_keeps_batch_one() -> None:
    guard, events = make(batch_size=100, adaptive=True)
    guard.observe("t", [30.0])
    guard.review(["t"], now=0.0)
    assert guard.batch_size == 1
    assert sizes(events) == []  # no change, no event
    assert len(named(events, "poll_interval.warning")) == 1  # 1 x 30 s > 7 s


def test_adaptive_reviews_are_not_rate_limited_while_the_batch_is_small() -> None:
    guard, _ = make(batch_size=100, adaptive=True)
    guard.observe("t", [0.01])
    for now in (0.0, 0.1, 0.2):  # 1 -> 2 -> 4 -> 8, all within one second
        guard.review(["t"], now=now)
    assert guard.batch_size == 8
    guard.review(["t"], now=0.3)  # batch 8: rate limit applies again
    guard.review(["t"], now=0.9)
    assert guard.batch_size == 8
    guard.review(["t"], now=1.2)  # 1 s after the review at 0.2
    assert guard.batch_size == 16


@settings(max_examples=60)
@given(
    max_batch=st.integers(1, 2000),
    steps=st.lists(
        # Measured durations: 0 or at least a microsecond (a subnormal p99 overflows
        # int(budget / p99) in fitting_batch, but no clock measures that).
        st.tuples(st.one_of(st.just(0.0), st.floats(1e-6, 20)), st.floats(0, 3, allow_nan=False)),
        min_size=1,
        max_size=30,
    ),
)
def test_adaptive_property(max_batch: int, steps: list[tuple[float, float]]) -> None:
    guard, _ = make(batch_size=max_batch, adaptive=True)
    now = 0.0
    for p99, advance in steps:
        before = guard.batch_size
        guard.observe("t", [p99] * 200)  # the whole p99 window moves to this value
        now += advance
        reviewed = now - guard._reviewed_at >= 1.0 or before < 8
        guard.review(["t"], now=now)
        after = guard.batch_size
        assert 1 <= after <= max_batch
        assert after <= 2 * before  # grows at most twofold
        if not reviewed:
            assert after == before
            continue
        fits = guard.fitting_batch(guard.p99("t") or 0.0)
        assert after == min(fits, 2 * before)  # shrinks at once to what fits


# --- watch ---------------------------------------------------------------------------------


def test_watch_quiet_under_budget(caplog: pytest.LogCaptureFixture) -> None:
    guard, events = make()
    guard.watch(0.0, "x")
    guard.watch(6.9, "x")
    guard.watch(7.0, "x")  # exactly the budget: still fine
    assert events == []
    assert warnings_in(caplog) == []


def test_watch_warns_once_per_stall_and_rearms(caplog: pytest.LogCaptureFixture) -> None:
    guard, events = make()
    guard.watch(7.5, "the batch of t[0] (10 records, 3 done)")
    guard.watch(8.0, "the batch of t[0]")
    guard.watch(9.9, "the batch of t[0]")
    stalls = named(events, "poll_interval.stalling")
    assert [e.payload for e in stalls] == [
        {
            "group": "grp",
            "seconds_since_poll": 7.5,
            "limit": pytest.approx(10.0),
            "holder": "the batch of t[0] (10 records, 3 done)",
        }
    ]
    [record] = warnings_in(caplog)
    assert "the batch of t[0] (10 records, 3 done)" in record.getMessage()
    assert "grp" in record.getMessage()
    guard.watch(0.1, "polled")  # a poll under budget re-arms
    guard.watch(8.0, "second stall")
    assert [e.payload["holder"] for e in named(events, "poll_interval.stalling")] == [
        "the batch of t[0] (10 records, 3 done)",
        "second stall",
    ]
    assert len(warnings_in(caplog)) == 2


def test_watch_and_review_are_independent() -> None:
    guard, events = make(batch_size=100)
    guard.watch(100.0, "x")
    guard.observe("t", [1.0])
    guard.review(["t"], now=0.0)
    guard.watch(100.0, "x")  # still the same stall
    assert [e.name for e in events] == ["poll_interval.stalling", "poll_interval.warning"]


def test_works_with_a_bus_nobody_listens_to(caplog: pytest.LogCaptureFixture) -> None:
    guard = PollIntervalGuard("g", 1000, 10, True, EventBus())
    guard.observe("t", [10.0])
    guard.review(["t"], now=0.0)
    guard.watch(math.inf, "x")
    assert len(warnings_in(caplog)) == 2
