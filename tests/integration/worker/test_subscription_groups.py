"""Subscription groups: a blocking regular topic on its own connection cannot stall another."""

from __future__ import annotations

import threading

from kafka_jobs import current_job
from kafka_jobs.testing import wait_until


def test_a_busy_regular_topic_does_not_hold_up_a_topic_in_another_group(
    kafka_app, new_topic
) -> None:
    regular, other = new_topic(), new_topic()
    app = kafka_app()
    app.configure_topic(other, long_running=True, subscription_group="long-jobs")
    release = threading.Event()
    holding = threading.Event()
    other_runs: list[int] = []

    @app.job(topic=regular)
    def hold() -> None:
        holding.set()
        release.wait(30)  # a regular job blocks polling of its connection while it runs

    @app.job(topic=other)
    def tick(n: int) -> None:
        other_runs.append(n)

    hold.delay()
    app.flush(10)
    worker = app.worker(concurrency=2)
    assert [g.name for g in worker.groups] == ["long-jobs", "default"]
    with worker:
        assert wait_until(holding.is_set, timeout=30), "the regular topic's job is running"
        for n in range(5):
            tick.delay(n)
        app.flush(10)
        try:
            assert wait_until(lambda: other_runs == list(range(5)), timeout=30)
            # The assignments tracker sees both connections' partitions.
            expected = {other: [0], regular: [0]}
            assert wait_until(lambda: app.assignments() == expected, timeout=10)
        finally:
            release.set()


def test_manual_offsets_commit_only_what_the_job_marked(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, manual_offsets=True)
    runs: list[int] = []

    @app.job
    def step(n: int) -> None:
        runs.append(n)
        if n < 3:
            current_job().mark_as_consumed()  # progress saved for records 0, 1, 2 only

    for n in range(5):
        step.delay(n)
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: runs == [0, 1, 2, 3, 4], timeout=30)
    with app.worker():  # a restart resumes after the last marked record
        assert wait_until(lambda: runs == [0, 1, 2, 3, 4, 3, 4], timeout=30)
