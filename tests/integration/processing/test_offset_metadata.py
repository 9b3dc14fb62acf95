"""Offset metadata given by jobs: committed with the offset and read back."""

from __future__ import annotations

import pytest

from kafka_jobs import current_job
from kafka_jobs.testing import BrokerInfo, broker_returns_commit_metadata, wait_until


def test_a_job_reads_the_metadata_of_the_last_commit(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, commit_interval=0.1)
    seen: dict[int, str | None] = {}

    @app.job
    def step(n: int) -> None:
        job = current_job()
        seen[n] = job.offset_metadata()
        job.mark_as_consumed(metadata=f"after-{n}")

    for n in range(5):
        step.delay(n)
    app.flush(30)
    with app.worker() as worker:
        assert wait_until(lambda: len(seen) == 5, timeout=30)
        assert wait_until(lambda: worker.report()[0].committed == 5, timeout=10)
        step.delay(5)
        app.flush(30)
        assert wait_until(lambda: 5 in seen, timeout=30)
    assert seen[0] is None  # nothing committed before
    assert seen[5] == "after-4"


def test_the_next_owner_reads_what_the_last_one_committed(
    kafka_app, new_topic, kafka_broker: BrokerInfo
) -> None:
    if not broker_returns_commit_metadata(kafka_broker.bootstrap_servers):
        pytest.skip(
            "this broker accepts offset-commit metadata but does not return it"
            " (the embedded Tansu broker): nothing for a next owner to read"
        )
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    seen: dict[int, str | None] = {}

    @app.job
    def step(n: int) -> None:
        seen[n] = current_job().offset_metadata()
        current_job().mark_as_consumed(metadata=f"cursor-{n}")

    for n in range(3):
        step.delay(n)
    app.flush(30)
    with app.worker():  # commits on shutdown
        assert wait_until(lambda: len(seen) == 3, timeout=30)
    step.delay(3)
    app.flush(30)
    with app.worker():
        assert wait_until(lambda: 3 in seen, timeout=30)
    assert seen[3] == "cursor-2"
