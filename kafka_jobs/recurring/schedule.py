"""A recurring schedule as a value: when it fires, and what a late leader does about it.

Pure: no I/O, no threads, no clock of its own (every function takes "now").
Times are epoch milliseconds. Interval fire times are multiples of the interval
since the epoch, so every worker computes the same ones; cron fire times come
from `cronsim` in the schedule's timezone (daylight-saving changes included).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from kafka_jobs.errors import ConfigurationError

Misfire = Literal["once", "skip"]

MISFIRE_POLICIES: tuple[Misfire, ...] = ("once", "skip")

DEFAULT_MISFIRE_GRACE = 60.0
"""Seconds a fire time may be late and still run in order (a leader change)."""

_MOST_LATE_FIRES = 1000
"""At most this many late fire times are enqueued in one go, whatever the grace."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One declared recurring job (built by `App.recurring`, which validates it).

    task: the registered name of the job to enqueue.
    every_ms / cron: the interval in milliseconds, or a cron expression (one of them).
    misfire: what to do with fire times later than `misfire_grace` seconds
        (no leader ran then): "once" enqueues one job, for the latest of them;
        "skip" enqueues none. Fire times late by less are all enqueued, in order.
    """

    name: str
    task: str
    every_ms: int | None = None
    cron: str | None = None
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    timezone: str = "UTC"
    misfire: Misfire = "once"
    misfire_grace: float = DEFAULT_MISFIRE_GRACE

    @classmethod
    def build(
        cls,
        name: str,
        task: str,
        *,
        every: float | None = None,
        cron: str | None = None,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        timezone: str = "UTC",
        misfire: str = "once",
        misfire_grace: float = DEFAULT_MISFIRE_GRACE,
    ) -> Schedule:
        """A checked schedule; raises `ConfigurationError` naming what is wrong."""
        if not name or not isinstance(name, str):
            raise ConfigurationError(f"a schedule needs a non-empty name, got {name!r}")
        if (every is None) == (cron is None):
            raise ConfigurationError(f"schedule {name!r}: give exactly one of every= or cron=")
        every_ms = None
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int | float):
                raise ConfigurationError(f"schedule {name!r}: every={every!r} is not a number")
            if not math.isfinite(every) or every <= 0:
                raise ConfigurationError(
                    f"schedule {name!r}: every={every!r} must be a positive number of seconds"
                )
            every_ms = round(every * 1000)
            if every_ms < 1:
                raise ConfigurationError(f"schedule {name!r}: every={every!r} is below 1 ms")
        if misfire not in MISFIRE_POLICIES:
            raise ConfigurationError(
                f"schedule {name!r}: misfire={misfire!r}; use 'once' or 'skip'"
            )
        if (
            isinstance(misfire_grace, bool)
            or not isinstance(misfire_grace, int | float)
            or not misfire_grace >= 0
        ):
            raise ConfigurationError(
                f"schedule {name!r}: misfire_grace={misfire_grace!r} must be seconds >= 0"
            )
        zone = _zone(name, timezone)
        if cron is not None:
            if not isinstance(cron, str):
                raise ConfigurationError(f"schedule {name!r}: cron={cron!r} is not a string")
            try:
                CronSim(cron, datetime.datetime.now(zone))
            except CronSimError as exc:
                raise ConfigurationError(
                    f"schedule {name!r}: invalid cron expression {cron!r}: {exc}"
                ) from exc
        return cls(
            name=name,
            task=task,
            every_ms=every_ms,
            cron=cron,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            timezone=timezone,
            misfire=misfire,  # checked against MISFIRE_POLICIES
            misfire_grace=float(misfire_grace),
        )

    @property
    def describe(self) -> str:
        """`every 5s` or the cron expression with its timezone, for tables."""
        if self.every_ms is not None:
            seconds = self.every_ms / 1000
            return f"every {seconds:g}s"
        return f"cron {self.cron} {self.timezone}"

    def next_after(self, at_ms: int) -> int:
        """The first fire time strictly after `at_ms`."""
        if self.every_ms is not None:
            return (at_ms // self.every_ms + 1) * self.every_ms
        assert self.cron is not None
        return _ms(next(CronSim(self.cron, _moment(at_ms, self.timezone))))

    def latest_at_or_before(self, at_ms: int) -> int:
        """The last fire time at or before `at_ms`."""
        if self.every_ms is not None:
            return at_ms // self.every_ms * self.every_ms
        assert self.cron is not None
        # Cron has whole minutes and a reverse walk excludes an exact start: going back
        # from the next whole second includes `at_ms` itself, and nothing after it.
        start = _moment(at_ms // 1000 * 1000 + 1000, self.timezone)
        return _ms(next(CronSim(self.cron, start, reverse=True)))

    def job_id(self, fire_ms: int) -> str:
        """The job id of one fire time: the same on every leader, so a copy is recognisable."""
        return f"recurring:{self.name}:{fire_ms}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What a leader does for one schedule now: enqueue `fire` (in order), then keep `last`."""

    fire: tuple[int, ...]
    last: int
    missed: int = 0
    """Fire times later than the grace that the misfire policy dropped."""


def plan(schedule: Schedule, last: int | None, now_ms: int) -> Plan:
    """The fire times due at `now_ms` after `last` (the last fire time handled).

    `last=None` (a schedule no leader handled yet) starts from now: its first fire
    time is the next one. Fire times within `misfire_grace` of now all run; older
    ones follow the misfire policy.
    """
    if last is None:
        return Plan((), schedule.latest_at_or_before(now_ms))
    first = schedule.next_after(last)
    if first > now_ms:
        return Plan((), last)
    horizon = now_ms - round(schedule.misfire_grace * 1000)
    fire: list[int] = []
    missed = 0
    if first < horizon:  # late beyond the grace: one or none, per the policy
        latest_missed = schedule.latest_at_or_before(horizon - 1)
        missed = _count_between(schedule, last, latest_missed)
        if schedule.misfire == "once":
            fire.append(latest_missed)
            missed -= 1
        cursor = latest_missed
    else:
        cursor = last
    upcoming = schedule.next_after(cursor)
    while upcoming <= now_ms and len(fire) < _MOST_LATE_FIRES:
        fire.append(upcoming)
        upcoming = schedule.next_after(upcoming)
    newest = fire[-1] if fire else cursor
    if upcoming <= now_ms:  # the cap was hit: the rest counts as missed
        newest = schedule.latest_at_or_before(now_ms)
        missed += 1
    return Plan(tuple(fire), newest, missed)


def _count_between(schedule: Schedule, after: int, upto: int) -> int:
    """Fire times in (after, upto] (exact for intervals, bounded for cron)."""
    if schedule.every_ms is not None:
        return max(0, upto // schedule.every_ms - after // schedule.every_ms)
    count, cursor = 0, after
    while count < _MOST_LATE_FIRES:
        cursor = schedule.next_after(cursor)
        if cursor > upto:
            break
        count += 1
    return count


def _zone(name: str, timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"schedule {name!r}: unknown timezone {timezone!r}") from exc


def _moment(at_ms: int, timezone: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at_ms / 1000, ZoneInfo(timezone))


def _ms(moment: datetime.datetime) -> int:
    return round(moment.timestamp() * 1000)
