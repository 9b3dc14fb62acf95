"""RetryPolicy: which failures are retried, how long they wait, what is refused."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.processing.retry import RetryPolicy


class Transient(Exception):
    pass


class StillTransient(Transient):
    pass


class Fatal(Transient):
    """A subclass of a retried class that must not be retried."""


# --- defaults and validation ---------------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.retries == 0
    assert policy.backoff == 1.0
    assert policy.backoff_max == 60.0
    assert policy.jitter == 0.2
    assert policy.retry_on == (Exception,)
    assert policy.give_up_on == ()


def test_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().retries = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retries": -1}, "retries"),
        ({"backoff": -0.1}, "backoff"),
        ({"backoff_max": -1.0}, "backoff"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
    ],
)
def test_invalid_values_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retries": 0},
        {"backoff": 0.0},
        {"backoff_max": 0.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
        {"backoff": 100.0, "backoff_max": 1.0},  # a cap below the first delay is allowed
    ],
)
def test_edge_values_are_accepted(kwargs: dict[str, float]) -> None:
    RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- should_retry --------------------------------------------------------------------------


def test_no_retries_by_default() -> None:
    assert not RetryPolicy().should_retry(ValueError("x"), 1)


def test_retries_count_attempts_after_the_first() -> None:
    policy = RetryPolicy(retries=3)
    error = RuntimeError("boom")
    assert [policy.should_retry(error, attempt) for attempt in range(1, 6)] == [
        True,
        True,
        True,
        False,
        False,
    ]


@given(retries=st.integers(0, 50), attempt=st.integers(1, 100))
def test_retry_count_property(retries: int, attempt: int) -> None:
    assert RetryPolicy(retries=retries).should_retry(ValueError(), attempt) == (attempt <= retries)


def test_default_retry_on_is_any_exception_but_not_base_exceptions() -> None:
    policy = RetryPolicy(retries=1)
    assert policy.should_retry(ValueError(), 1)
    assert policy.should_retry(Transient(), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)
    assert not policy.should_retry(SystemExit(1), 1)


def test_retry_on_limits_the_classes_and_includes_subclasses() -> None:
    policy = RetryPolicy(retries=2, retry_on=(Transient, OSError))
    assert policy.should_retry(Transient(), 1)
    assert policy.should_retry(StillTransient(), 1)
    assert policy.should_retry(ConnectionError(), 1)  # an OSError
    assert not policy.should_retry(ValueError(), 1)
    assert not policy.should_retry(Exception(), 1)


def test_give_up_on_wins_over_retry_on() -> None:
    policy = RetryPolicy(retries=5, retry_on=(Transient,), give_up_on=(Fatal,))
    assert policy.should_retry(Transient(), 1)
    assert policy.should_retry(StillTransient(), 1)
    assert not policy.should_retry(Fatal(), 1)


def test_give_up_on_same_class_as_retry_on() -> None:
    policy = RetryPolicy(retries=5, retry_on=(ValueError,), give_up_on=(ValueError,))
    assert not policy.should_retry(ValueError(), 1)


def test_give_up_on_with_default_retry_on() -> None:
    policy = RetryPolicy(retries=5, give_up_on=(KeyError,))
    assert not policy.should_retry(KeyError("k"), 1)
    assert policy.should_retry(IndexError(), 1)


def test_retry_count_checked_before_classes() -> None:
    policy = RetryPolicy(retries=1, retry_on=(ValueError,))
    assert not policy.should_retry(ValueError(), 2)


def test_empty_retry_on_retries_nothing() -> None:
    assert not RetryPolicy(retries=3, retry_on=()).should_retry(ValueError(), 1)


# --- delay ---------------------------------------------------------------------------------


def test_delay_doubles_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(retries=10, backoff=1.0, backoff_max=60.0, jitter=0)
    assert [policy.delay(a) for a in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_delay_of_attempt_zero_or_below_is_the_first_backoff() -> None:
    policy = RetryPolicy(backoff=0.5, jitter=0)
    assert policy.delay(0) == 0.5
    assert policy.delay(-3) == 0.5


def test_zero_backoff_is_zero_even_with_jitter() -> None:
    policy = RetryPolicy(backoff=0.0, jitter=1.0)
    assert [policy.delay(a, random.Random(a)) for a in range(1, 20)] == [0.0] * 19


def test_zero_cap_is_zero() -> None:
    policy = RetryPolicy(backoff=5.0, backoff_max=0.0, jitter=0.5)
    assert policy.delay(3, random.Random(0)) == 0.0


def test_cap_below_backoff_wins() -> None:
    policy = RetryPolicy(backoff=100.0, backoff_max=1.0, jitter=0)
    assert policy.delay(1) == 1.0


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(backoff=2.0, jitter=0.5)
    first = [policy.delay(a, random.Random(42)) for a in range(1, 8)]
    second = [policy.delay(a, random.Random(42)) for a in range(1, 8)]
    assert first == second
    assert len({policy.delay(3, random.Random(seed)) for seed in range(20)}) > 1


def test_jitter_uses_module_random_without_an_rng() -> None:
    policy = RetryPolicy(backoff=10.0, jitter=0.2)
    state = random.getstate()
    try:
        random.seed(7)
        first = policy.delay(1)
        random.seed(7)
        assert policy.delay(1) == first
    finally:
        random.setstate(state)
    assert 8.0 <= first <= 12.0


def test_jitter_spreads_both_ways_below_the_cap() -> None:
    policy = RetryPolicy(backoff=10.0, backoff_max=100.0, jitter=0.2)
    rng = random.Random(3)
    delays = [policy.delay(1, rng) for _ in range(500)]
    assert min(delays) >= 8.0 and max(delays) <= 12.0
    assert min(delays) < 9.0 and max(delays) > 11.0


def test_jitter_at_the_cap_only_goes_down() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=60.0, jitter=0.2)
    rng = random.Random(5)
    delays = [policy.delay(20, rng) for _ in range(500)]
    assert all(48.0 <= d <= 60.0 for d in delays)
    assert max(delays) == 60.0  # anything above the cap is clipped to it
    assert min(delays) < 50.0


@given(
    backoff=st.floats(0, 1000, allow_nan=False),
    backoff_max=st.floats(0, 5000, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
    attempt=st.integers(-5, 200),
    seed=st.integers(0, 2**32),
)
def test_delay_bounds_property(
    backoff: float, backoff_max: float, jitter: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(retries=1000, backoff=backoff, backoff_max=backoff_max, jitter=jitter)
    base = min(backoff_max, backoff * 2.0 ** max(0, attempt - 1))
    delay = policy.delay(attempt, random.Random(seed))
    assert delay == policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= backoff_max
    eps = 1e-9 * max(1.0, base)
    assert base * (1 - jitter) - eps <= delay <= min(backoff_max, base * (1 + jitter)) + eps
    if jitter == 0:
        assert delay == base


@given(
    backoff=st.floats(0.001, 10),
    attempt=st.integers(1, 60),
)
def test_delay_never_shrinks_with_attempts_without_jitter(backoff: float, attempt: int) -> None:
    policy = RetryPolicy(backoff=backoff, backoff_max=3600.0, jitter=0)
    assert policy.delay(attempt + 1) >= policy.delay(attempt)
    assert policy.delay(attempt + 1) in (2 * policy.delay(attempt), 3600.0)


def test_delay_of_a_late_attempt_is_the_cap() -> None:
    policy = RetryPolicy(retries=5000, backoff=1.0, backoff_max=60.0, jitter=0)
    assert policy.should_retry(RuntimeError(), 1025)
    assert policy.delay(1025) == 60.0
