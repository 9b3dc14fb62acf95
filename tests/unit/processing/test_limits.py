"""Rate strings, throttle values, the token bucket and the waker of held jobs."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from kafka_jobs import ConfigurationError, Throttle
from kafka_jobs.app import App
from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.processing.calls import SUSPENDED
from kafka_jobs.processing.failures import RetryLater
from kafka_jobs.processing.jobs import Job, LaneBatch, PartitionState
from kafka_jobs.processing.limiting import RateLimits, Waker
from kafka_jobs.processing.limits import (
    Rate,
    RateLimiter,
    TokenBucket,
    parse_rate,
    parse_throttle,
)
from kafka_jobs.settings import Settings


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("100/s", 100.0),
        ("10/m", 10 / 60),
        ("1000/h", 1000 / 3600),
        ("0.5/s", 0.5),
        (" 3 / m ", 3 / 60),
        ("7", 7.0),
        (".5/s", 0.5),
        (20, 20.0),
        (2.5, 2.5),
    ],
)
def test_rates_parse_like_celery(text: str | float, per_second: float) -> None:
    rate = parse_rate(text)
    assert rate is not None
    assert rate.per_second == pytest.approx(per_second)
    assert rate.spacing == pytest.approx(1 / per_second)


def test_no_rate_is_no_limit() -> None:
    assert parse_rate(None) is None


@pytest.mark.parametrize(
    "bad", ["", "fast", "10/d", "10/sec", "-1/s", "0/s", "1/s/s", "s", "1e3/s", 0, -2, True, [1]]
)
def test_invalid_rates_are_refused_with_the_value_named(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        parse_rate(bad)  # type: ignore[arg-type]


def test_an_invalid_rate_is_refused_at_declaration() -> None:
    app = App(Settings(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(ConfigurationError, match="'10/x' is not a rate"):

        @app.job(rate_limit="10/x")
        def work() -> None: ...

    @app.job(rate_limit="10/m")
    def fine() -> None: ...

    assert fine.options.rate_limit == Rate(10 / 60, "10/m")


def test_throttles_accept_a_pair_or_a_throttle_and_refuse_nonsense() -> None:
    assert parse_throttle((5, 2)) == Throttle(5, 2)
    assert parse_throttle(Throttle(1, 0.5)) == Throttle(1, 0.5)
    assert parse_throttle(None) is None
    for bad in [(0, 1), (1, 0), (1.5, 1), (1, -1), (True, 1), (1, float("inf")), "5/s", (1, 2, 3)]:
        with pytest.raises(ConfigurationError, match="throttle"):
            parse_throttle(bad)


def test_configure_topic_keeps_the_throttle_and_refuses_a_bad_one() -> None:
    app = App(Settings(bootstrap_servers="127.0.0.1:1"))
    app.configure_topic("orders", throttle=(100, 60))
    assert app.consumption("orders").throttle == Throttle(100, 60)
    with pytest.raises(ConfigurationError, match="throttle limit"):
        app.configure_topic("other", throttle=(0, 60))


def test_a_bucket_of_capacity_one_spaces_starts_by_the_rate() -> None:
    bucket = TokenBucket(50.0, now=100.0)
    assert bucket.take(100.0) == 0.0  # a full bucket: the first starts at once
    assert bucket.take(100.0) == pytest.approx(0.02)
    assert bucket.take(100.01) == pytest.approx(0.01)
    assert bucket.take(100.02) == 0.0
    # Idle for long: still only one token (capacity 1), no burst.
    assert bucket.take(200.0) == 0.0
    assert bucket.take(200.0) == pytest.approx(0.02)


def test_a_bucket_never_allows_more_than_the_rate_over_time() -> None:
    bucket, now, started = TokenBucket(10.0, now=0.0), 0.0, []
    for _ in range(10_000):  # callers retry exactly when told to
        if now >= 4.95:
            break
        wait = bucket.take(now)
        if wait == 0.0:
            started.append(now)
        now += wait if wait else 0.001
    assert now >= 4.95
    assert len(started) == 50  # 1 at t=0, then one per 0.1 s up to 4.9 s
    assert all(b - a >= 0.1 - 1e-6 for a, b in itertools.pairwise(started))


def test_the_limiter_keeps_one_bucket_per_task() -> None:
    limiter, rate = RateLimiter(), Rate(1.0, "1/s")
    assert limiter.wait("a", rate, 0.0) == 0.0
    assert limiter.wait("b", rate, 0.0) == 0.0
    assert limiter.wait("a", rate, 0.5) == pytest.approx(0.5)
    assert limiter.wait("a", Rate(4.0, "4/s"), 0.5) == 0.0  # a changed rate starts over


def _job(blocking: bool = True, batch: LaneBatch | None = None) -> Job:
    return Job("g", PartitionState("t", 0), [], blocking=blocking, batch=batch)


def test_a_blocking_job_over_its_limit_ends_for_the_listener_to_requeue() -> None:
    events, seen = EventBus(), []
    events.subscribe(lambda event: seen.append(event))
    limits = RateLimits(events, threading.Event(), resume=lambda job: None)
    rate = Rate(1.0, "1/s")
    job = _job()
    assert limits.hold(job, 5, "task", "id-1", rate) is None
    held = limits.hold(job, 6, "task", "id-2", rate)
    assert isinstance(held, RetryLater) and 0.9 < held.delay <= 1.0 and held.rerun
    assert job.rate_limited
    [event] = seen
    assert event.name == "job.rate_limited"
    assert event.payload["offset"] == 6 and event.payload["job_id"] == "id-2"


def test_without_a_resume_path_a_held_job_falls_back_to_a_timed_pause() -> None:
    limits = RateLimits(EventBus(), threading.Event(), resume=None)
    rate = Rate(1.0, "1/s")
    job = _job(blocking=False)
    limits.hold(job, 0, "task", "id", rate)
    assert isinstance(limits.hold(job, 1, "task", "id", rate), RetryLater)
    assert not job.rate_limited  # re-queueing would only meet the limit again at once


def test_a_lane_over_its_limit_ends_for_the_listener_or_collapses_without_a_resume_path() -> None:
    rate = Rate(1.0, "1/s")
    limits = RateLimits(EventBus(), threading.Event(), resume=lambda job: None)
    batch = LaneBatch(10)
    lane = _job(batch=batch)
    limits.hold(lane, 0, "task", "id", rate)
    assert isinstance(limits.hold(lane, 1, "task", "id", rate), RetryLater)
    assert lane.rate_limited and not batch.collapsed.is_set()
    limits = RateLimits(EventBus(), threading.Event(), resume=None)
    lane = _job(batch=batch)
    limits.hold(lane, 0, "task", "id", rate)
    assert limits.hold(lane, 1, "task", "id", rate) == RetryLater(0.0)
    assert batch.collapsed.is_set() and not lane.rate_limited


def test_a_non_blocking_job_is_suspended_and_woken_when_its_token_is_due() -> None:
    woken: list[tuple[Job, float]] = []
    done = threading.Event()

    def resume(job: Job) -> None:
        woken.append((job, time.monotonic()))
        done.set()

    limits = RateLimits(EventBus(), threading.Event(), resume)
    rate = Rate(5.0, "5/s")
    job = _job(blocking=False)
    assert limits.hold(job, 0, "task", "id", rate) is None
    held_at = time.monotonic()
    assert limits.hold(job, 1, "task", "id", rate) is SUSPENDED
    assert done.wait(10)
    [(resumed, at)] = woken
    assert resumed is job
    assert at - held_at >= 0.2 - 0.01  # not before its token (1/5 s) is due


def test_the_waker_hands_jobs_back_at_once_when_the_worker_stops_or_the_partition_goes() -> None:
    woken: list[Job] = []
    stopping = threading.Event()
    waker = Waker(woken.append, stopping)
    lost, kept = _job(blocking=False), _job(blocking=False)
    waker.wake_at(lost, time.monotonic() + 3600)
    waker.wake_at(kept, time.monotonic() + 3600)
    lost.state.revoke()
    deadline = time.monotonic() + 10
    while woken != [lost] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert woken == [lost]
    stopping.set()
    while len(woken) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert woken == [lost, kept]
    assert len(waker) == 0
