"""Job states in the results topic (started), dill values, and the topic check at start."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import kafka_jobs
from kafka_jobs import BadSignature
from kafka_jobs.connection.admin import admin_client, create_missing
from kafka_jobs.testing import unique_name


def _wait_for_state(handle: kafka_jobs.JobResult, state: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = handle.state
    while seen != state and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = handle.state
    return seen


def test_a_running_job_is_started_then_succeeded_with_its_times(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))
    release = threading.Event()

    @app.job(keep_result=True)
    def slow() -> str:
        release.wait(30)
        return "done"

    with app.worker(concurrency=1):
        handle = slow.delay()
        # Read back from the results topic: the job cannot end before `release`.
        assert _wait_for_state(handle, "started", 30) == "started"
        assert not handle.ready()
        release.set()
        assert handle.get(timeout=30) == "done"
        outcome = kafka_jobs.result(handle.id, app).outcome()
    assert outcome is not None and outcome.state == "succeeded"
    assert 0 < outcome.started_at_ms <= outcome.finished_at_ms


def test_a_dill_job_keeps_a_signed_pickle_that_only_its_secret_opens(kafka_app, new_topic) -> None:
    topic, results_topic = new_topic(), unique_name("results")
    app = kafka_app(default_topic=topic, results_topic=results_topic, signing_secret="s3cret")

    @app.job(keep_result=True, serializer="dill")
    def shapes(n: int) -> object:
        return {frozenset(range(n)), (n, "x")}  # not JSON

    with app.worker(concurrency=1):
        handle = shapes.delay(3)
        assert handle.get(timeout=30) == {frozenset({0, 1, 2}), (3, "x")}
    stranger = kafka_app(
        default_topic=topic,
        results_topic=results_topic,
        signing_secret="another",
        kafka_config={"client.id": unique_name("stranger")},
    )
    with pytest.raises(BadSignature):
        kafka_jobs.result(handle.id, stranger).get(timeout=30)


def test_a_results_topic_that_does_not_compact_is_reported_at_start(
    kafka_app, new_topic, kafka_broker, caplog
) -> None:
    results_topic = unique_name("results")
    create_missing(
        admin_client({"bootstrap.servers": kafka_broker.bootstrap_servers}),
        [results_topic],
        config={"cleanup.policy": "delete"},
    )
    app = kafka_app(default_topic=new_topic(), results_topic=results_topic)

    @app.job(keep_result=True)
    def one() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="kafka_jobs"), app.worker(concurrency=1):
        assert one.delay().get(timeout=30) == 1  # still works, with the warning
    warnings = [r.getMessage() for r in caplog.records if "not compacted" in r.getMessage()]
    assert warnings and results_topic in warnings[0], caplog.text
