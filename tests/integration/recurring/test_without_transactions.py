"""The leader's path for brokers without transactions: jobs acknowledged first, then the state."""

from __future__ import annotations

import itertools

from kafka_jobs import Event
from kafka_jobs.testing import wait_until
from tests.integration.recurring.conftest import fire_times, job_ids


def test_without_transactions_each_fire_time_is_enqueued_once(
    kafka_app, kafka_broker, new_topic
) -> None:
    app = kafka_app(default_topic=new_topic(), summary_interval=0, status_interval=0)
    fired: list[int] = []
    ran: list[str] = []

    def on_fired(event: Event) -> None:
        if event.name == "schedule.fired":
            fired.append(event.payload["fire_time"])

    app.events.subscribe(on_fired)

    @app.job(name="plain.tick")
    def tick() -> None:
        ran.append("tick")

    app.recurring(tick, every=1, name="tick")
    worker = app.worker(concurrency=1)
    assert worker.recurring is not None
    worker.recurring.transactions = False  # what a broker refusing init_transactions gets
    with worker:
        assert wait_until(lambda: len(fired) >= 4 and len(ran) >= 4, 60)
    times = fire_times(job_ids(kafka_broker, app.settings.default_topic))
    assert times == sorted(fired) and len(times) == len(set(times))
    assert {b - a for a, b in itertools.pairwise(times)} == {1000}
    assert worker.recurring.transactions is False
