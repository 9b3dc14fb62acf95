"""Time limits: validation at declaration, how levels combine, deadlines, the watchdog."""

from __future__ import annotations

import argparse
import threading
import time

import pytest

from kafka_jobs import (
    App,
    ConfigurationError,
    JobTerminated,
    Settings,
    SoftTimeLimitExceeded,
    cli_worker,
)
from kafka_jobs.errors import TimeLimitExceeded
from kafka_jobs.processing.timelimits import (
    TERMINATED,
    TIME_LIMIT,
    Deadlines,
    Running,
    TimeLimits,
    Watchdog,
    check_limits,
    failure_reason,
    resolve,
)
from kafka_jobs.testing import wait_until


@pytest.mark.parametrize(
    ("soft", "hard", "message"),
    [
        (-1, None, "soft_time_limit must be a finite number of seconds >= 0"),
        (None, -0.5, "time_limit must be a finite number of seconds >= 0"),
        (float("inf"), None, "soft_time_limit must be a finite"),
        ("10", None, "soft_time_limit must be a number of seconds"),
        (True, None, "soft_time_limit must be a number of seconds"),
        (5, 5, "soft_time_limit (5s) must be below time_limit (5s)"),
        (10, 2, "soft_time_limit (10s) must be below time_limit (2s)"),
    ],
)
def test_invalid_limits_are_refused_with_a_clear_message(soft, hard, message) -> None:
    with pytest.raises(ConfigurationError, match="where: ") as raised:
        check_limits(soft, hard, "where")
    assert message in str(raised.value)


@pytest.mark.parametrize(("soft", "hard"), [(None, None), (0, 0), (1, 2), (3, None), (None, 3)])
def test_valid_limits_pass(soft, hard) -> None:
    check_limits(soft, hard, "where")


def test_invalid_limits_are_refused_at_declaration() -> None:
    app = App(bootstrap_servers="localhost:1")
    with pytest.raises(ConfigurationError, match="must be below time_limit"):

        @app.job(soft_time_limit=10, time_limit=5)
        def job() -> None: ...

    with pytest.raises(ConfigurationError, match="time_limit must be"):
        app.configure_topic("t", time_limit=-1)
    with pytest.raises(ConfigurationError, match="must be below time_limit"):
        App(bootstrap_servers="localhost:1", soft_time_limit=3, time_limit=2)
    with pytest.raises(ConfigurationError, match="KAFKA_JOBS_TIME_LIMIT"):
        Settings.from_env({"KAFKA_JOBS_TIME_LIMIT": "soon"})
    assert app.tasks == {}


def test_limits_are_read_from_the_environment_and_the_worker_flags() -> None:
    settings = Settings.from_env(
        {"KAFKA_JOBS_SOFT_TIME_LIMIT": "1.5", "KAFKA_JOBS_TIME_LIMIT": "4"}
    )
    assert (settings.soft_time_limit, settings.time_limit) == (1.5, 4.0)
    app = App(settings)
    parser = argparse.ArgumentParser()
    cli_worker.add_options(parser)
    cli_worker.apply(app, parser.parse_args(["--soft-time-limit", "2", "--time-limit", "9"]))
    assert (app.settings.soft_time_limit, app.settings.time_limit) == (2.0, 9.0)
    with pytest.raises(ConfigurationError, match="must be below"):
        cli_worker.apply(app, parser.parse_args(["--soft-time-limit", "20"]))


def test_job_options_carry_their_limits() -> None:
    app = App(bootstrap_servers="localhost:1")

    @app.job(soft_time_limit=1, time_limit=2)
    def limited() -> None: ...

    @app.job
    def plain() -> None: ...

    app.configure_topic("t", time_limit=7)
    assert limited.options.time_limits == TimeLimits(1, 2)
    assert plain.options.time_limits is None
    assert app.topic_options["t"].time_limits == TimeLimits(None, 7)


def test_the_job_wins_over_the_topic_which_wins_over_the_app() -> None:
    app = TimeLimits(1, 10)
    assert resolve(None, None, app) == TimeLimits(1, 10)
    assert resolve(None, TimeLimits(None, 5), app) == TimeLimits(1, 5)
    assert resolve(TimeLimits(2, None), TimeLimits(None, 5), app) == TimeLimits(2, 5)
    # 0 on a level means "none", not "inherit"
    assert resolve(TimeLimits(0, None), None, app) == TimeLimits(None, 10)
    assert resolve(TimeLimits(None, 0), None, app) == TimeLimits(1, None)
    assert not resolve(None, None, TimeLimits(0, 0)).any
    # Levels combined may put the soft limit at or past the hard one: it never acts.
    assert resolve(TimeLimits(20, None), None, app) == TimeLimits(None, 10)


def test_failure_reasons() -> None:
    assert failure_reason(TimeLimitExceeded("x")) == TIME_LIMIT == "time-limit"
    assert failure_reason(JobTerminated("x")) == TERMINATED
    assert failure_reason(ValueError("x")) == "job-failed"


def test_deadlines_come_due_in_order_and_skip_runs_that_ended() -> None:
    deadlines = Deadlines()
    a = Running("a", TimeLimits(1, 3), now=100.0)
    b = Running("b", TimeLimits(None, 2), now=100.0)
    c = Running("c", None, now=100.0)
    for running in (a, b, c):
        deadlines.add(running)
    assert len(deadlines) == 3  # c has none
    assert deadlines.next_at() == 101.0
    assert deadlines.due(100.5) == []
    assert deadlines.due(102.0) == [("soft", a), ("hard", b)]
    assert deadlines.next_at() == 103.0
    # Not started in the watchdog: its thread would judge these made-up deadlines
    # against the real clock (long past them) and end the run first.
    assert Watchdog().finish(a) is None  # finished: its hard deadline no longer counts
    assert deadlines.next_at() is None
    assert deadlines.due(1000.0) == []


def test_the_watchdog_raises_the_soft_limit_in_the_job_thread_and_ends_it_at_the_hard_one() -> None:
    ended: list[tuple[str, str]] = []
    watchdog = Watchdog(on_end=lambda running, error: ended.append((running.job_id, repr(error))))
    outcome: list[str] = []
    finished: list[BaseException | None] = []

    def job() -> None:
        running = Running("j", TimeLimits(0.2, 0.6), "thread")
        running.thread_id = threading.get_ident()
        watchdog.start(running)
        try:
            try:
                for _ in range(200):  # 10 s in small steps
                    time.sleep(0.05)
            except SoftTimeLimitExceeded:
                outcome.append("soft")
            for _ in range(200):  # no cleanup in time: the hard limit passes
                time.sleep(0.05)
                if running.ended:
                    break
        finally:
            finished.append(watchdog.finish(running))

    thread = threading.Thread(target=job)
    started = time.monotonic()
    thread.start()
    thread.join(15)
    took = time.monotonic() - started
    watchdog.close()
    assert outcome == ["soft"]
    assert len(finished) == 1 and isinstance(finished[0], TimeLimitExceeded)
    assert ended == [("j", repr(finished[0]))]
    assert 0.6 <= took < 10
    assert watchdog.running() == 0


def test_a_finished_run_gets_no_late_soft_limit() -> None:
    watchdog = Watchdog()
    running = Running("j", TimeLimits(0.1, None), "thread")
    running.thread_id = threading.get_ident()
    watchdog.start(running)
    assert watchdog.finish(running) is None
    time.sleep(0.3)  # past the soft deadline: nothing may arrive here any more
    watchdog.fire("soft", running)  # even if the watchdog thread were late
    time.sleep(0.05)
    watchdog.close()


def test_terminate_ends_every_run_of_the_job_id_and_only_those() -> None:
    ends: list[str] = []
    watchdog = Watchdog(on_end=lambda running, error: ends.append(running.job_id))
    one, two, other = Running("x"), Running("x"), Running("y")
    for running in (one, two, other):
        watchdog.start(running)
    assert watchdog.terminate("x") == 2
    assert watchdog.terminate("unknown") == 0
    assert ends == ["x", "x"]
    assert isinstance(watchdog.finish(one), JobTerminated)
    assert isinstance(watchdog.finish(two), JobTerminated)
    assert watchdog.finish(other) is None
    assert watchdog.terminate("x") == 0  # over: nothing left to end
    assert watchdog.running() == 0


def test_a_run_ends_once_whichever_comes_first() -> None:
    ends: list[str] = []
    watchdog = Watchdog(on_end=lambda running, error: ends.append(type(error).__name__))
    running = Running("z", TimeLimits(None, 0.1))
    watchdog.start(running)
    assert wait_until(lambda: running.ended, timeout=5)
    assert watchdog.terminate("z") == 0
    assert ends == ["TimeLimitExceeded"]
    watchdog.close()
