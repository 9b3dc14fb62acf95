"""Retry from inside a job and re-enqueued retries: the decision, the copy, the handler."""

from __future__ import annotations

import pickle
import random

import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs import App, ConfigurationError, MaxRetriesExceeded, Retry, Settings
from kafka_jobs.context import JobContext
from kafka_jobs.deadletter import JOB_FAILED
from kafka_jobs.delay.tiers import tier_topic
from kafka_jobs.instrumentation.events import Event, EventBus
from kafka_jobs.options import FailurePolicy, TopicOptions, resolve
from kafka_jobs.processing.failures import Failure, Requeued, RetryLater, RetryThenDeadLetter
from kafka_jobs.processing.retry import (
    DEFAULT_MAX_RETRIES,
    RetryDecision,
    RetryPolicy,
    check_ordering,
    check_pause_max,
    decide,
    final_error,
)
from kafka_jobs.wire import (
    H_ATTEMPT,
    H_DLQ_ATTEMPTS,
    H_DLQ_EXCEPTION,
    H_DLQ_FIRST_FAILED,
    H_ETA,
    H_EXPIRES,
    H_FIRST_FAILED,
    H_ID,
    H_TARGET,
    header_map,
    read_first_failed_ms,
    retried_headers,
)
from tests.unit.processing.test_failures import Policies, Writer

RELAXED = {"ordering": "relaxed", "pause_max": 1.0}


# --- the decision --------------------------------------------------------------------------


def test_a_retry_countdown_overrides_the_backoff_and_long_waits_are_requeued() -> None:
    policy = RetryPolicy(retries=5, backoff=0.1, jitter=0)
    assert decide(policy, Retry(countdown=6), 1, **RELAXED) == RetryDecision(6.0, True)
    assert decide(policy, Retry(countdown=0.5), 1, **RELAXED) == RetryDecision(0.5, False)
    assert decide(policy, Retry(), 1, **RELAXED) == RetryDecision(0.1, False)


def test_strict_ordering_always_pauses() -> None:
    policy = RetryPolicy(retries=5, backoff=30, jitter=0)
    assert decide(policy, Retry(countdown=60), 1, ordering="strict", pause_max=1.0) == (
        RetryDecision(60.0, False)
    )
    assert decide(policy, ValueError(), 1, ordering="strict", pause_max=1.0) == (
        RetryDecision(30.0, False)
    )


def test_policy_retries_follow_the_same_threshold() -> None:
    policy = RetryPolicy(retries=3, backoff=1.0, backoff_max=60, jitter=0)
    # 1 s, 2 s, 4 s: the first waits in place, the next ones are re-enqueued
    assert [decide(policy, ValueError(), n, **RELAXED) for n in (1, 2, 3, 4)] == [
        RetryDecision(1.0, False),
        RetryDecision(2.0, True),
        RetryDecision(4.0, True),
        None,
    ]


def test_retry_attempts_use_max_retries_then_the_policy_then_celery_s_default() -> None:
    with_retries = RetryPolicy(retries=2, jitter=0)
    without = RetryPolicy(jitter=0)
    assert decide(with_retries, Retry(countdown=2), 2, **RELAXED) is not None
    assert decide(with_retries, Retry(countdown=2), 3, **RELAXED) is None
    assert decide(without, Retry(), DEFAULT_MAX_RETRIES, **RELAXED) is not None
    assert decide(without, Retry(), DEFAULT_MAX_RETRIES + 1, **RELAXED) is None
    assert decide(with_retries, Retry(max_retries=0), 1, **RELAXED) is None
    assert decide(without, Retry(max_retries=5), 5, **RELAXED) is not None


def test_a_retry_ignores_retry_on_and_give_up_on() -> None:
    policy = RetryPolicy(retries=2, retry_on=(KeyError,), give_up_on=(Retry,), jitter=0)
    assert decide(policy, Retry(countdown=3), 1, **RELAXED) == RetryDecision(3.0, True)
    assert decide(policy, ValueError(), 1, **RELAXED) is None


@given(
    countdown=st.one_of(st.none(), st.floats(0, 1e6)),
    max_retries=st.one_of(st.none(), st.integers(0, 20)),
    retries=st.integers(0, 20),
    attempt=st.integers(1, 40),
    pause_max=st.floats(0, 100),
)
def test_decisions_hold_their_rules(
    countdown: float | None, max_retries: int | None, retries: int, attempt: int, pause_max: float
) -> None:
    policy = RetryPolicy(retries=retries, backoff=0.5)
    error = Retry(countdown=countdown, max_retries=max_retries)
    decision = decide(
        policy, error, attempt, ordering="relaxed", pause_max=pause_max, rng=random.Random(1)
    )
    limit = max_retries if max_retries is not None else (retries or DEFAULT_MAX_RETRIES)
    assert (decision is None) == (attempt > limit)
    if decision is not None:
        assert decision.requeue == (decision.delay > pause_max)
        if countdown is not None:
            assert decision.delay == countdown
    strict = decide(policy, error, attempt, ordering="strict", pause_max=pause_max)
    assert strict is None or not strict.requeue


def test_the_final_error_of_an_exhausted_retry() -> None:
    cause = ConnectionError("down")
    assert final_error(Retry(exc=cause), 4) is cause
    exceeded = final_error(Retry(countdown=2), 4)
    assert isinstance(exceeded, MaxRetriesExceeded) and "4 attempts" in str(exceeded)
    other = KeyError("x")
    assert final_error(other, 4) is other


def test_retry_refuses_bad_values_and_survives_pickling() -> None:
    with pytest.raises(ValueError, match="countdown"):
        Retry(countdown=-1)
    with pytest.raises(ValueError, match="countdown"):
        Retry(countdown=float("inf"))
    with pytest.raises(ValueError, match="max_retries"):
        Retry(max_retries=-1)
    copy = pickle.loads(pickle.dumps(Retry(countdown=2.5, exc=KeyError("k"), max_retries=4)))
    assert (copy.countdown, copy.max_retries, type(copy.exc)) == (2.5, 4, KeyError)


def test_current_job_retry_raises_retry() -> None:
    import threading

    context = JobContext(
        "t", "id", "topic", 0, 0, 1, None, {}, threading.Event(), threading.Event(), lambda _: None
    )
    with pytest.raises(Retry) as raised:
        context.retry(countdown=6, exc=KeyError("k"), max_retries=2)
    assert (raised.value.countdown, raised.value.max_retries) == (6, 2)


# --- declarations --------------------------------------------------------------------------


def test_invalid_orderings_and_thresholds_are_refused_at_declaration() -> None:
    app = App()
    with pytest.raises(ConfigurationError, match="retry_ordering must be 'relaxed' or 'strict'"):
        app.configure_topic("t", retry_ordering="fifo")  # type: ignore[typeddict-item]
    with pytest.raises(ConfigurationError, match="retry_ordering"):

        @app.job(retry_ordering="ordered")  # type: ignore[call-overload]
        def job() -> None: ...

    with pytest.raises(ConfigurationError, match="retry_ordering"):
        Settings(retry_ordering="yes")
    with pytest.raises(ConfigurationError, match="retry_pause_max"):
        Settings(retry_pause_max=-1)
    with pytest.raises(ConfigurationError, match="retry_pause_max"):
        Settings(retry_pause_max=float("nan"))
    assert check_ordering("strict") == "strict"
    assert check_pause_max(0) == 0.0


def test_the_job_s_ordering_wins_over_the_topic_s() -> None:
    topic = TopicOptions(retry_ordering="strict")
    assert resolve("t", None, None, topic).ordering == "strict"
    assert resolve("t", None, None, topic, "relaxed").ordering == "relaxed"
    assert resolve("t", None, None, None).ordering is None  # the worker's setting then
    app = App()
    app.configure_topic("t", retry_ordering="strict")

    @app.job(topic="t", retry_ordering="relaxed")
    def relaxed() -> None: ...

    @app.job(topic="t")
    def inherits() -> None: ...

    assert app.failure_policy("t", relaxed.name).ordering == "relaxed"
    assert app.failure_policy("t", inherits.name).ordering == "strict"


# --- the copy ------------------------------------------------------------------------------


def test_retried_headers_keep_everything_but_the_attempt_and_first_failure() -> None:
    raw = [
        (H_ID, b"abc"),
        (H_ATTEMPT, b"2"),
        (H_EXPIRES, b"99"),
        ("traceparent", b"00-x"),
        (H_FIRST_FAILED, b"5"),
    ]
    copy = header_map(retried_headers(raw, 3, 5))
    assert copy == {
        H_ID: b"abc",
        H_ATTEMPT: b"3",
        H_EXPIRES: b"99",
        "traceparent": b"00-x",
        H_FIRST_FAILED: b"5",
    }
    assert read_first_failed_ms(retried_headers(raw, 3, 7)) == 7
    assert read_first_failed_ms([(H_FIRST_FAILED, b"junk")]) is None
    assert read_first_failed_ms(None) is None


# --- the handler ---------------------------------------------------------------------------


def _handler(
    writer: Writer, *, retries: int = 2, ordering: str | None = None
) -> tuple[RetryThenDeadLetter, list[Event]]:
    policy = FailurePolicy(
        RetryPolicy(retries=retries, backoff=5.0, jitter=0),
        "orders.dlq",
        ordering,  # type: ignore[arg-type]
    )
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append)
    handler = RetryThenDeadLetter(
        Policies(policy),
        "group-1",
        writer=writer,
        events=events,
        delivery_timeout=7.0,
        retry_pause_max=1.0,
        delay_prefix="p.delay",
    )
    return handler, seen


def _failure(error: BaseException, attempt: int = 1, headers: list | None = None) -> Failure:
    record = Message(
        topic="orders",
        partition=2,
        offset=41,
        key=b"k",
        value=b"v",
        headers=headers if headers is not None else [(H_ID, b"job-1"), (H_ATTEMPT, b"1")],
    )
    return Failure(record, error, JOB_FAILED, "tasks.charge", attempt, 1000, 2000)


def test_a_long_retry_is_requeued_to_a_delay_tier_and_acknowledged_first() -> None:
    writer = Writer()
    handler, seen = _handler(writer)
    assert handler.handle(_failure(Retry(countdown=6))) == Requeued(6.0)
    [(topic, value, key, headers)] = writer.records
    assert (topic, value, key) == (tier_topic("p.delay", 4), b"v", b"k")
    written = header_map(headers)
    assert written[H_ID] == b"job-1"
    assert written[H_ATTEMPT] == b"2"
    assert written[H_FIRST_FAILED] == b"1000"
    assert written[H_TARGET] == b"orders"
    assert written[H_ETA] is not None
    assert writer.handles[0].timeouts == [7.0]
    [event] = seen
    assert (event.name, event.payload["how"], event.payload["delay"]) == (
        "job.retrying",
        "requeued",
        6.0,
    )


def test_a_short_retry_and_a_strict_one_pause() -> None:
    writer = Writer()
    handler, seen = _handler(writer)
    assert handler.handle(_failure(Retry(countdown=0.5))) == RetryLater(0.5)
    strict, strict_seen = _handler(writer, ordering="strict")
    assert strict.handle(_failure(Retry(countdown=6))) == RetryLater(6.0)
    assert writer.records == []
    assert [e.payload["how"] for e in seen + strict_seen] == ["paused", "paused"]


def test_a_failed_requeue_asks_again_without_running_the_job() -> None:
    writer = Writer(fails=True)
    handler, seen = _handler(writer)
    disposition = handler.handle(_failure(ValueError("boom")))  # backoff 5 s: requeued
    assert isinstance(disposition, RetryLater) and not disposition.rerun
    assert [e.name for e in seen] == ["retry.requeue_failed"]
    writer.fails = False
    assert handler.handle(_failure(ValueError("boom"))) == Requeued(5.0)


def test_an_exhausted_retry_is_dead_lettered_with_its_exc_and_the_first_failure() -> None:
    writer = Writer()
    handler, seen = _handler(writer, retries=2)
    headers = [(H_ID, b"job-1"), (H_ATTEMPT, b"3"), (H_FIRST_FAILED, b"400")]
    failure = _failure(Retry(countdown=6, exc=KeyError("gone")), attempt=3, headers=headers)
    assert handler.handle(failure) is None
    [(topic, _, _, written)] = writer.records
    dead = header_map(written)
    assert topic == "orders.dlq"
    assert dead[H_DLQ_ATTEMPTS] == b"3"
    assert dead[H_DLQ_EXCEPTION] == b"builtins.KeyError"
    assert dead[H_DLQ_FIRST_FAILED] == b"400"  # carried from the first copy's failure
    [event] = seen
    assert event.name == "job.dead_lettered" and isinstance(event.payload["error"], KeyError)


def test_an_exhausted_retry_without_exc_fails_with_max_retries_exceeded() -> None:
    writer = Writer()
    handler, _ = _handler(writer, retries=0)
    failure = _failure(Retry(countdown=6), attempt=DEFAULT_MAX_RETRIES + 1)
    assert handler.handle(failure) is None
    [(_, _, _, written)] = writer.records
    assert header_map(written)[H_DLQ_EXCEPTION].endswith(b".MaxRetriesExceeded")
