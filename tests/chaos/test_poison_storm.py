"""One record in ten malformed, each in a generated way: workers never crash, every malformed
record reaches the dead-letter topic with its reason, every valid one runs."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import dill
from confluent_kafka import Producer

from kafka_jobs import App, dlq
from kafka_jobs.testing import wait_until
from tests import ledger
from tests.chaos.conftest import SCALE, Cluster, progress

VALID = int(3_000 * SCALE)
MAX_PAYLOAD = 4_000
REQUIRED = ["kj-version", "kj-task", "kj-id", "kj-attempt", "kj-enqueued-at", "content-type"]


def _headers(seq: int) -> list[tuple[str, bytes]]:
    return [
        ("kj-version", b"1"),
        ("kj-task", b"chaos.record"),
        ("kj-id", f"poison-{seq}".encode()),
        ("kj-attempt", b"1"),
        ("kj-enqueued-at", b"0"),
        ("content-type", b"application/json"),
        ("chaos-poison", str(seq).encode()),
    ]


def _poison(rng: random.Random, seq: int) -> tuple[bytes, list[tuple[str, bytes]], str]:
    """A malformed record of a random kind and the dead-letter reason it must get."""
    headers = _headers(seq)
    good = json.dumps({"args": [seq, f"p{seq}"], "kwargs": {}}).encode()
    kind = rng.randrange(9)
    if kind == 0:  # random bytes (invalid UTF-8 up front)
        return b"\xff" + rng.randbytes(rng.randrange(0, 64)), headers, "not-decodable"
    if kind == 1:  # JSON cut short
        return good[: rng.randrange(1, len(good))], headers, "not-decodable"
    if kind == 2:  # a required header missing
        gone = rng.choice(REQUIRED)
        return good, [h for h in headers if h[0] != gone], "not-decodable"
    if kind == 3:  # a format version from the future
        version = str(rng.randrange(2, 1000)).encode()
        return (
            good,
            [(n, version if n == "kj-version" else v) for n, v in headers],
            ("unknown-format-version"),
        )
    if kind == 4:  # a task nobody registered
        task = f"nobody.{rng.randrange(10**6)}".encode()
        return good, [(n, task if n == "kj-task" else v) for n, v in headers], "unknown-task"
    if kind == 5:  # pickled and unsigned
        value = dill.dumps({"args": [seq, "p"], "kwargs": {}})
        dill_type = b"application/x-dill"
        return (
            value,
            [(n, dill_type if n == "content-type" else v) for n, v in headers],
            ("bad-signature"),
        )
    if kind == 6:  # over the payload limit
        value = json.dumps({"args": [seq, "x" * (MAX_PAYLOAD + rng.randrange(10, 5000))]})
        return value.encode(), headers, "payload-too-large"
    if kind == 7:  # JSON of the wrong shape
        value = rng.choice([b"[1, 2]", b'{"args": 5}', b'"text"', b"null", b'{"kwargs": []}'])
        return value, headers, "not-decodable"
    # well formed, but the call does not fit the function: fails, retried, dead-lettered
    return json.dumps({"args": [seq], "kwargs": {"nope": 1}}).encode(), headers, "job-failed"


def test_poison_storm(cluster: Callable[..., Cluster]) -> None:
    chaos = cluster(
        KAFKA_JOBS_MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD),
        KAFKA_JOBS_SIGNING_SECRET="chaos-secret",
    )
    workers = [chaos.start(), chaos.start()]
    raw = Producer({"bootstrap.servers": chaos.broker.bootstrap_servers, "linger.ms": 5})
    expected: dict[int, str] = {}
    poison_seq = 10**6  # apart from the valid jobs' seqs
    valid_seq = 0
    app = App(bootstrap_servers=chaos.broker.bootstrap_servers, default_topic=chaos.topic)

    @app.job(key="key", name="chaos.record")
    def record(seq: int, key: str) -> None:
        raise AssertionError("runs in the worker processes only")

    while valid_seq < VALID:
        if chaos.rng.random() < 0.1:
            value, headers, reason = _poison(chaos.rng, poison_seq)
            raw.produce(chaos.topic, value, headers=headers)
            expected[poison_seq] = reason
            poison_seq += 1
        else:
            record.delay(valid_seq, f"k{valid_seq % 50}")
            valid_seq += 1
    app.flush(60)
    assert raw.flush(60) == 0
    started = time.monotonic()

    def all_ran() -> bool:
        progress("poison", ledger.distinct(chaos.ledger), VALID, started)
        return ledger.distinct(chaos.ledger) >= VALID

    assert wait_until(all_ran, 180 * SCALE, interval=2.0)
    found: dict[int, str] = {}

    def all_dead_lettered() -> bool:
        letters = dlq.read(app, f"{chaos.topic}.dlq", idle=1.0, timeout=60).letters
        for letter in letters:
            marker = dict(letter.headers).get("chaos-poison")
            if isinstance(marker, bytes):
                found[int(marker)] = letter.info.get("reason", "?")
        return len(found) >= len(expected)

    assert wait_until(all_dead_lettered, 60, interval=2.0), (len(found), len(expected))
    app.close()
    assert found == expected
    assert {r.seq for r in ledger.executions(chaos.ledger)} == set(range(VALID))
    assert all(worker.poll() is None for worker in workers), "a worker process died"
    kinds = sorted(set(expected.values()))
    print(f"valid={VALID} poison={len(expected)} reasons={kinds}")
