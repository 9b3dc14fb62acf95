"""Poison records go straight to the dead-letter topic with their reason; the rest all run."""

from __future__ import annotations

import threading
from pathlib import Path

import dill
from confluent_kafka import Producer

from kafka_jobs import dlq
from kafka_jobs.signing import sign
from kafka_jobs.testing import BrokerInfo, wait_until


def headers(
    task: str, job_id: str = "j1", version: bytes = b"1", ctype: bytes = b"application/json"
):
    return [
        ("kj-version", version),
        ("kj-task", task.encode()),
        ("kj-id", job_id.encode()),
        ("kj-attempt", b"1"),
        ("kj-enqueued-at", b"0"),
        ("content-type", ctype),
    ]


class CreatesFile:
    """Unpickling this creates a file: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_each_poison_kind_is_dead_lettered_and_valid_records_run(
    kafka_broker: BrokerInfo, kafka_app, new_topic, tmp_path: Path
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, max_payload_bytes=2000, signing_secret="right")
    ran: list[int] = []
    lock = threading.Lock()

    @app.job
    def ok(n: int) -> None:
        with lock:
            ran.append(n)

    marker = tmp_path / "unpickled"
    evil = dill.dumps({"args": [CreatesFile(str(marker))], "kwargs": {}})
    dill_type = b"application/x-dill"
    poison = [
        (b"{broken json", headers(ok.name), "not-decodable"),
        (b"{}", headers(ok.name, version=b"7"), "unknown-format-version"),
        (b'{"args":[1]}', headers("nobody.registered.this"), "unknown-task"),
        (evil, headers(ok.name, ctype=dill_type), "bad-signature"),  # unsigned
        (
            evil,
            [
                *headers(ok.name, ctype=dill_type),
                ("kj-signature", sign(b"wrong", ok.name, "j1", evil)),
            ],
            "bad-signature",
        ),
        (b'{"args":["' + b"x" * 3000 + b'"]}', headers(ok.name), "payload-too-large"),
    ]
    raw = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    n = 0
    for value, record_headers, _ in poison:
        ok.delay(n)
        app.flush(10)
        raw.produce(topic, value, headers=record_headers)
        assert raw.flush(10) == 0
        n += 1
    ok.delay(n)
    app.flush(10)

    with app.worker():
        assert wait_until(lambda: sorted(ran) == list(range(n + 1)), timeout=60)
    letters = dlq.read(app, f"{topic}.dlq").letters
    assert [d.info["reason"] for d in letters] == [reason for _, _, reason in poison]
    assert not marker.exists(), "an unsigned or wrongly signed dill payload was unpickled"


def test_signed_dill_payload_runs(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), signing_secret="s3cret")
    results: list[int] = []

    @app.job(serializer="dill")
    def apply(fn, value: int) -> None:
        results.append(fn(value))

    offset = 10
    apply.delay(lambda v: v * 2 + offset, 16)  # a closure: JSON could not carry it
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: results == [42], timeout=30)
