"""Schedules as values: declaration checks, fire times, and the misfire policy."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs import App
from kafka_jobs.errors import ConfigurationError
from kafka_jobs.recurring.schedule import Schedule, plan

S = 1000
MIN = 60 * S


def _ms(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


def _app() -> App:
    return App(bootstrap_servers="127.0.0.1:1")  # never connects: declarations only


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "invalid cron expression"),
        ({"cron": "every minute"}, "invalid cron expression"),
        ({"every": 0}, "must be a positive number"),
        ({"every": -5}, "must be a positive number"),
        ({"every": float("nan")}, "must be a positive number"),
        ({"every": "5"}, "is not a number"),
        ({"every": True}, "is not a number"),
        ({}, "exactly one of every= or cron="),
        ({"every": 5, "cron": "* * * * *"}, "exactly one of every= or cron="),
        ({"every": 5, "misfire": "all"}, "misfire='all'"),
        ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": 5, "args": (object(),)}, "schedule 'nightly'"),
    ],
)
def test_invalid_declarations_are_refused_with_the_reason(options, message) -> None:
    app = _app()

    @app.job(name="nightly")
    def nightly(*args: object) -> None: ...

    with pytest.raises(ConfigurationError, match=message.replace("*", r"\*").replace("(", r"\(")):
        app.recurring(nightly, **options)
    assert not app.schedules


def test_declaration_defaults_and_unique_names() -> None:
    app = _app()

    @app.job(name="report")
    def report(kind: str) -> None: ...

    schedule = app.recurring(report, cron="*/5 * * * *", args=("daily",))
    assert (schedule.name, schedule.task, schedule.misfire, schedule.timezone) == (
        "report", "report", "once", "UTC"
    )  # fmt: skip
    assert app.schedules["report"] is schedule
    with pytest.raises(ConfigurationError, match="already declared"):
        app.recurring(report, every=60)
    assert app.recurring("other.task", every=60, name="by-name").task == "other.task"


def test_interval_fire_times_are_multiples_since_the_epoch() -> None:
    every = Schedule.build("s", "t", every=5)
    assert every.next_after(12_345) == 15_000
    assert every.next_after(15_000) == 20_000
    assert every.latest_at_or_before(15_000) == 15_000
    assert every.latest_at_or_before(14_999) == 10_000
    assert every.job_id(15_000) == "recurring:s:15000"


def test_cron_fire_times_follow_the_timezone_across_daylight_saving() -> None:
    daily = Schedule.build("s", "t", cron="30 2 * * *", timezone="Europe/Paris")
    # 2026-03-29 is the spring change in Paris: 02:30 does not exist that night.
    start = _ms("2026-03-27T12:00:00+01:00")
    first = daily.next_after(start)
    assert first == _ms("2026-03-28T02:30:00+01:00")
    second = daily.next_after(first)
    # 02:30 does not exist that night: the run happens once, when the clocks jump (03:00).
    assert second == _ms("2026-03-29T03:00:00+02:00")
    assert daily.next_after(second) == _ms("2026-03-30T02:30:00+02:00")
    assert daily.latest_at_or_before(first) == first
    assert daily.latest_at_or_before(first - 1) < first
    every5 = Schedule.build("s", "t", cron="*/5 * * * *")
    assert every5.next_after(_ms("2026-01-01T12:05:00+00:00")) == _ms("2026-01-01T12:10:00+00:00")
    assert every5.latest_at_or_before(_ms("2026-01-01T12:07:59+00:00")) == _ms(
        "2026-01-01T12:05:00+00:00"
    )


def test_a_new_schedule_starts_from_now() -> None:
    schedule = Schedule.build("s", "t", every=10)
    due = plan(schedule, None, 123_456)
    assert due.fire == () and due.last == 120_000
    assert plan(schedule, due.last, 129_999).fire == ()
    assert plan(schedule, due.last, 130_000).fire == (130_000,)


def test_fire_times_within_the_grace_all_run_in_order() -> None:
    schedule = Schedule.build("s", "t", every=1, misfire="skip", misfire_grace=60)
    due = plan(schedule, 100 * S, 110 * S + 500)  # a leader change of ten seconds
    assert due.fire == tuple(range(101 * S, 111 * S, S)) and due.last == 110 * S
    assert due.missed == 0


@pytest.mark.parametrize("policy", ["once", "skip"])
def test_misfire_policy_beyond_the_grace(policy: str) -> None:
    schedule = Schedule.build("s", "t", every=10, misfire=policy, misfire_grace=30)
    # Last handled at 100 s, back at 1000 s: 110..960 s are late beyond the 30 s grace.
    due = plan(schedule, 100 * S, 1000 * S)
    recent = (970 * S, 980 * S, 990 * S, 1000 * S)  # within the grace
    if policy == "once":
        assert due.fire == (960 * S, *recent)  # the latest of the missed ones, once
        assert due.missed == 85  # 110..960 is 86 fire times, one of which ran
    else:
        assert due.fire == recent
        assert due.missed == 86
    assert due.last == 1000 * S


def test_late_fires_are_bounded() -> None:
    schedule = Schedule.build("s", "t", every=0.001, misfire_grace=3600)
    due = plan(schedule, 0, 10_000_000)
    assert len(due.fire) == 1000 and due.last == 10_000_000 and due.missed >= 1


@given(
    every=st.integers(min_value=1, max_value=100_000),
    last=st.integers(min_value=0, max_value=10**12),
    later=st.integers(min_value=0, max_value=10**7),
    grace=st.integers(min_value=0, max_value=1000),
    policy=st.sampled_from(["once", "skip"]),
)
def test_plans_never_repeat_or_go_back(
    every: int, last: int, later: int, grace: int, policy: str
) -> None:
    schedule = Schedule.build("s", "t", every=every / 1000, misfire=policy, misfire_grace=grace)
    now = last + later
    due = plan(schedule, last, now)
    assert list(due.fire) == sorted(set(due.fire))
    assert all(last < t <= now and t % every == 0 for t in due.fire)
    assert last <= due.last <= now
    assert not due.fire or due.fire[-1] <= due.last
    assert plan(schedule, due.last, now).fire == ()  # a second look at once fires nothing
    if due.missed == 0 and len(due.fire) < 1000:  # nothing dropped: every fire time ran
        assert len(due.fire) == now // every - last // every
