"""Rate limits of tasks and throttles of topics: the values, and the token bucket.

`rate_limit="50/s"` on a task allows at most that many of its jobs to start per
second in one worker (Celery's meaning: per task, per worker process). A
`Throttle` on a topic allows at most `limit` jobs per `interval` seconds per
partition (Karafka's throttling). Both are pure: no threads, no I/O; the
executor (`processing.limiting`) and the listener (`worker.throttling`) apply them.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

from kafka_jobs.errors import ConfigurationError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([smh]))?\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: at most `per_second` job starts per second; `text` as declared."""

    per_second: float
    text: str

    @property
    def spacing(self) -> float:
        """Seconds between two tokens."""
        return 1.0 / self.per_second


def parse_rate(value: str | float | None) -> Rate | None:
    """A `rate_limit` option as a `Rate` ("100/s", "10/m", "1000/h", or a number per second).

    None means no limit. Anything else raises `ConfigurationError` naming the value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigurationError(
            f"rate_limit must be a string like '100/s', '10/m' or '1000/h', or a number"
            f" of jobs per second, not {value!r}"
        )
    if isinstance(value, str):
        found = _RATE.fullmatch(value)
        if found is None:
            raise ConfigurationError(
                f"rate_limit {value!r} is not a rate: use '<count>/s', '<count>/m' or"
                " '<count>/h' (e.g. '100/s', '10/m', '1000/h')"
            )
        count, unit = float(found.group(1)), found.group(2) or "s"
        per_second, text = count / _UNITS[unit], value.strip()
    else:
        per_second, text = float(value), f"{value}/s"
    if not math.isfinite(per_second) or per_second <= 0:
        raise ConfigurationError(
            f"rate_limit {value!r} must allow a positive number of jobs (leave it out for no limit)"
        )
    return Rate(per_second, text)


@dataclass(frozen=True, slots=True)
class Throttle:
    """Topic throttling: at most `limit` jobs per `interval` seconds, per partition.

    A partition that used its `limit` pauses until its window of `interval`
    seconds ends; nothing is dropped, other partitions go on.
    """

    limit: int
    interval: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(f"throttle limit must be an integer >= 1, not {self.limit!r}")
        interval = self.interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise ConfigurationError(
                f"throttle interval must be a positive number of seconds, not {interval!r}"
            )


ThrottleSetting = Throttle | tuple[int, float]
"""What `configure_topic(throttle=...)` takes: a `Throttle` or `(limit, interval_seconds)`."""


def parse_throttle(value: object) -> Throttle | None:
    """A `throttle` option as a `Throttle` (None: not throttled)."""
    if value is None or isinstance(value, Throttle):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return Throttle(value[0], value[1])
    raise ConfigurationError(
        f"throttle must be a Throttle(limit, interval) or a (limit, interval_seconds) pair,"
        f" not {value!r}"
    )


class TokenBucket:
    """Tokens refilled at `rate` per second up to `capacity`; one token per job start.

    Not thread-safe on its own (`RateLimiter` locks). Times are monotonic seconds.
    """

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float = 1.0, now: float = 0.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until the next one."""
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        # A hair under one token is float rounding of a caller that waited exactly as told.
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per task name (capacity 1, as Celery's). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, task: str, rate: Rate, now: float) -> float:
        """Take a start for `task`: 0.0 if it may start now, else seconds to wait first."""
        with self._lock:
            bucket = self._buckets.get(task)
            if bucket is None or bucket.rate != rate.per_second:
                bucket = self._buckets[task] = TokenBucket(rate.per_second, now=now)
            return bucket.take(now)
