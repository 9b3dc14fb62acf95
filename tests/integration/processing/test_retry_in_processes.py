"""`Retry` and `current_job().retry()` from a job running in a process-pool child.

The child's `Retry` travels back to the worker, which re-enqueues the job through
the delay tiers (a countdown above `retry_pause_max`) or pauses its partition (one
below), or dead-letters it once its retries are spent. What the job saw is read
back from the broker: every run writes an effect (attempt, pid, start time) to an
effects topic, its value comes through the results topic, its letter from the
dead-letter topic.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from kafka_jobs.wire import (
    H_ATTEMPT,
    H_DLQ_ATTEMPTS,
    H_DLQ_EXCEPTION,
    H_DLQ_FIRST_FAILED,
    H_DLQ_LAST_FAILED,
    H_DLQ_MESSAGE,
    H_DLQ_TRACEBACK,
    H_ID,
    header_map,
)
from tests.integration.effects import Effects, effects_of

PAUSE_MAX = 1.0  # the default `retry_pause_max`: the countdowns below sit either side of it


@pytest.fixture
def pool_app(
    kafka_broker: BrokerInfo, new_topic, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """`retrypool_app` on this test's topics, as the worker and its children import it."""
    topic = new_topic()
    for name, value in kafka_broker.env().items():  # the broker and the test timeouts
        if name == "KAFKA_BOOTSTRAP_SERVERS" or name.startswith("KAFKA_JOBS_CONSUMER_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETRYPOOL_TOPIC", topic)
    monkeypatch.setenv(Effects.ENV, new_topic(prefix="effects"))
    monkeypatch.setenv("KAFKA_JOBS_RESULTS_TOPIC", f"{topic}.results")
    # Delayed jobs of one test must not be released by another test's workers.
    monkeypatch.setenv("KAFKA_JOBS_DELAY_TOPIC_PREFIX", unique_name("delay"))
    module = importlib.reload(importlib.import_module("tests.integration.processing.retrypool_app"))
    assert module.app.settings.retry_pause_max == PAUSE_MAX
    internal: list[Event] = []
    module.app.events.subscribe(lambda e: internal.append(e) if e.name == "worker.error" else None)
    yield module
    module.app.close(5)
    assert not internal, f"internal errors were swallowed: {internal}"


def _worker(module: ModuleType) -> Any:
    return module.app.worker(pool="processes", concurrency=1, group_id=unique_name("retrypool"))


@pytest.mark.parametrize("via", ["raise", "current_job"])
@pytest.mark.parametrize(("countdown", "how"), [(1.5, "requeued"), (0.4, "paused")])
def test_a_retry_asked_in_a_child_runs_again_after_its_countdown(
    pool_app: ModuleType, reader, via: str, countdown: float, how: str
) -> None:
    assert (countdown > PAUSE_MAX) == (how == "requeued")
    topic = os.environ["RETRYPOOL_TOPIC"]
    events: list[Event] = []
    pool_app.app.events.subscribe(events.append)
    handle = pool_app.once.delay(countdown, via)
    pool_app.app.flush(10)
    runs = reader(os.environ[Effects.ENV])
    with _worker(pool_app) as worker:
        assert handle.get(60) == 2  # from the results topic: the second run succeeded
        assert wait_until(lambda: len(runs.read()) >= 2, timeout=30)
        children = set(worker.processes.pids())
    seen = effects_of(runs.records)
    assert [e["attempt"] for e in seen] == [1, 2]  # what current_job().attempt said
    assert {e["pid"] for e in seen} <= children and os.getpid() not in children
    first, second = seen[0]["at"], seen[1]["at"]
    assert second >= first + countdown  # the countdown is kept ...
    assert second < first + 30  # ... and the retry is not lost
    copies = reader(topic).read()
    if how == "requeued":  # the copy on the topic carries the next attempt
        assert len(copies) == 2
        assert header_map(copies[1].headers())[H_ID] == handle.id.encode()
        assert header_map(copies[1].headers())[H_ATTEMPT] == b"2"
    else:  # paused in place: nothing was written back
        assert len(copies) == 1
    retrying = [e for e in events if e.name == "job.retrying"]
    assert [(e.payload["how"], e.payload["delay"]) for e in retrying] == [(how, countdown)]
    assert handle.state == "succeeded"


@pytest.mark.parametrize(
    ("via", "countdown", "max_retries", "exc", "exception", "message"),
    [
        ("raise", 1.5, 2, "gone", b"builtins.LookupError", b"gone"),
        ("current_job", 0.3, 1, None, b"kafka_jobs.errors.MaxRetriesExceeded", None),
        # An exc that cannot travel back comes as text; the retry it rode on is kept.
        (
            "raise",
            1.5,
            1,
            "no-round-trip",
            b"kafka_jobs.processing.processes.RemoteJobError",
            b"NoRoundTrip: 1/2",
        ),
    ],
)
def test_a_child_s_exhausted_retries_are_dead_lettered_with_their_attempts(
    pool_app: ModuleType,
    reader,
    via: str,
    countdown: float,
    max_retries: int,
    exc: str | None,
    exception: bytes,
    message: bytes | None,
) -> None:
    topic = os.environ["RETRYPOOL_TOPIC"]
    handle = pool_app.always.delay(countdown, via, max_retries, exc)
    pool_app.app.flush(10)
    dead, runs = reader(f"{topic}.dlq"), reader(os.environ[Effects.ENV])
    with _worker(pool_app):
        assert wait_until(lambda: len(dead.read()) == 1, timeout=90)
    attempts = max_retries + 1  # `max_retries` wins over the job's retries=5
    assert [e["attempt"] for e in effects_of(runs.read())] == list(range(1, attempts + 1))
    [letter] = dead.records
    headers = header_map(letter.headers())
    assert headers[H_ID] == handle.id.encode()
    assert headers[H_DLQ_ATTEMPTS] == str(attempts).encode()
    assert headers[H_DLQ_EXCEPTION] == exception
    if message is not None:
        assert headers[H_DLQ_MESSAGE] == message
    # Where the child asked for the retry: the traceback stayed there, a note came back.
    traceback = (headers[H_DLQ_TRACEBACK] or b"").decode()
    assert "raised in worker process" in traceback and "ask_retry" in traceback
    first, last = int(headers[H_DLQ_FIRST_FAILED] or 0), int(headers[H_DLQ_LAST_FAILED] or 0)
    assert last - first >= 1000 * countdown * max_retries - 2  # each retry waited (ms)
