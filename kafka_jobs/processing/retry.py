"""Retry policy: how many attempts a failing job gets and how long it waits between them."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
