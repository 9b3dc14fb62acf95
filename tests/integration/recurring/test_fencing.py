"""A leader whose transactional.id was taken over (a successor started) stops firing."""

from __future__ import annotations

from confluent_kafka import Producer

from kafka_jobs import Event
from kafka_jobs.recurring.state import leader_group
from kafka_jobs.testing import wait_until
from tests.integration.recurring.conftest import fire_times, job_ids


def test_a_fenced_leader_stops_and_commits_nothing_more(kafka_app, kafka_broker, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), summary_interval=0, status_interval=0)
    fired: list[int] = []

    def on_fired(event: Event) -> None:
        if event.name == "schedule.fired":
            fired.append(event.payload["fire_time"])

    app.events.subscribe(on_fired)

    @app.job(name="fence.tick")
    def tick() -> None: ...

    app.recurring(tick, every=1, name="tick")
    with app.worker(concurrency=1) as worker:
        leader = worker.recurring
        assert leader is not None
        assert leader.leading.wait(60) and wait_until(lambda: len(fired) >= 2, 30)
        # What a successor does first: open a producer with the group's transactional.id.
        successor = Producer(
            {"bootstrap.servers": kafka_broker.bootstrap_servers,
             "transactional.id": leader_group(app.settings.group_id)}
        )  # fmt: skip
        successor.init_transactions(30)
        assert wait_until(lambda: not leader.leading.is_set(), 30), "the fenced leader went on"
    # What the leader reported as fired (committed) is in the topic once each; nothing else.
    times = fire_times(job_ids(kafka_broker, app.settings.default_topic))
    assert times == sorted(set(times)) == sorted(fired)
