"""Retry policy: how many attempts a failing job gets and how long it waits between them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from kafka_jobs.errors import ConfigurationError, Retry

RetryOrdering = Literal["relaxed", "strict"]
"""How a retry waits: "relaxed" re-enqueues waits longer than `retry_pause_max`
(other keys of the partition go on; the retried job runs after later jobs of its
key), "strict" always pauses the partition (per-key order kept, the partition waits)."""

RETRY_ORDERINGS: tuple[RetryOrdering, ...] = ("relaxed", "strict")

DEFAULT_MAX_RETRIES = 3
"""Attempts after the first a `Retry` gets when neither it nor its job sets any (Celery's)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how soon to run a failed job again.

    retries: further attempts after the first (0: fail at once).
    backoff: seconds before the first retry; doubles each attempt ...
    backoff_max: ... up to this cap.
    jitter: fraction of the delay drawn at random (0.2: +-20 %), so retries of
        many jobs failing together spread out.
    retry_on: only these exception classes are retried (default: any Exception).
    give_up_on: these are never retried, even if `retry_on` matches.
    """

    retries: int = 0
    backoff: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.2
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must not be negative")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("backoff and backoff_max must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when the `attempt`-th run (1-based) failed with `error` and another is due."""
        if attempt > self.retries:
            return False
        if isinstance(error, self.give_up_on):
            return False
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempt`-th failed run."""
        try:
            base = min(self.backoff_max, self.backoff * 2.0 ** max(0, attempt - 1))
        except OverflowError:  # attempt in the thousands: far past any cap
            base = self.backoff_max
        if not self.jitter or not base:
            return base
        spread = base * self.jitter
        return max(0.0, min(self.backoff_max, base + (rng or random).uniform(-spread, spread)))


def check_ordering(value: object, where: str = "retry_ordering") -> RetryOrdering:
    """`value` as a `RetryOrdering`; `ConfigurationError` naming the choices otherwise."""
    if value == "relaxed":
        return "relaxed"
    if value == "strict":
        return "strict"
    raise ConfigurationError(f"{where} must be 'relaxed' or 'strict', not {value!r}")


def check_pause_max(value: object) -> float:
    """`value` as a `retry_pause_max` (finite seconds >= 0); `ConfigurationError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"retry_pause_max must be finite seconds >= 0, not {value!r}")
    if value < 0:
        raise ConfigurationError(f"retry_pause_max must not be negative, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Run a failed job again after `delay` seconds; `requeue`: through the delay tiers."""

    delay: float
    requeue: bool


def decide(
    policy: RetryPolicy,
    error: BaseException,
    attempt: int,
    *,
    ordering: RetryOrdering,
    pause_max: float,
    rng: random.Random | None = None,
) -> RetryDecision | None:
    """Whether and how the `attempt`-th run (1-based), failed with `error`, runs again.

    A `Retry` is always retried while attempts are left (`retry_on` / `give_up_on`
    do not apply); its countdown replaces the backoff. None: no attempt is left.
    Waits longer than `pause_max` re-enqueue the job unless `ordering` is "strict".
    """
    if isinstance(error, Retry):
        limit = error.max_retries
        if limit is None:
            limit = policy.retries or DEFAULT_MAX_RETRIES
        if attempt > limit:
            return None
        delay = error.countdown if error.countdown is not None else policy.delay(attempt, rng)
    elif policy.should_retry(error, attempt):
        delay = policy.delay(attempt, rng)
    else:
        return None
    return RetryDecision(delay, ordering != "strict" and delay > pause_max)


def final_error(error: BaseException, attempts: int) -> BaseException:
    """The error a job failed with for good: a `Retry` with no attempt left gives its `exc`."""
    return error.final_error(attempts) if isinstance(error, Retry) else error
