"""Malformed records, unknown tasks and raising jobs: the worker logs them and keeps going."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from kafka_jobs import NotDecodable, UnknownFormatVersion, UnknownTask
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import BrokerInfo, wait_until


def test_worker_keeps_going_past_bad_records(
    kafka_broker: BrokerInfo, kafka_app, new_topic
) -> None:
    topic = new_topic(partitions=1)
    app = kafka_app(default_topic=topic)
    ran: list[int] = []
    events: list[Event] = []
    lock = threading.Lock()

    @app.job
    def good(n: int) -> None:
        with lock:
            ran.append(n)

    @app.job
    def explode(n: int) -> None:
        raise RuntimeError(f"job {n} failed on purpose")

    app.events.subscribe(events.append)
    raw = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    good.delay(1)
    app.flush(10)
    raw.produce(topic, b"\x00not json", headers=[("kj-version", b"1")])  # missing headers
    raw.produce(topic, b"no headers at all")
    raw.produce(topic, b'{"args":[]}', headers=[*_headers("nobody.registered.this")])
    raw.produce(topic, b'{"args":[]}', headers=[("kj-version", b"99"), *_headers("x")[1:]])
    raw.produce(topic, b"{not json", headers=_headers(good.name))
    assert raw.flush(10) == 0
    explode.delay(2)
    good.delay(3)
    app.flush(10)

    with app.worker(concurrency=2):
        assert wait_until(lambda: ran == [1, 3], timeout=30)
        good.delay(4)  # still a group member, still consuming
        app.flush(10)
        assert wait_until(lambda: ran == [1, 3, 4], timeout=30)

    rejected = [e.payload["error"] for e in events if e.name == "record.rejected"]
    assert [type(r) for r in rejected] == [
        NotDecodable,
        NotDecodable,
        UnknownTask,
        UnknownFormatVersion,
        NotDecodable,
    ]
    failed = [e for e in events if e.name == "job.failed"]
    assert len(failed) == 1 and isinstance(failed[0].payload["error"], RuntimeError)
    # Every record, bad ones included, was committed: a restart would not see them again.
    committed = kafka_broker.committed(app.settings.group_id, topic)
    assert committed == 9


def _headers(task: str) -> list[tuple[str, bytes]]:
    return [
        ("kj-version", b"1"),
        ("kj-task", task.encode()),
        ("kj-id", b"0123"),
        ("kj-attempt", b"1"),
        ("kj-enqueued-at", b"0"),
        ("content-type", b"application/json"),
    ]
