"""kill -9 of a worker in the middle of a chord: another one finishes it, the callback runs once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from kafka_jobs import chord
from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from tests.integration.conftest import stop, worker_process

MEMBERS = 8


def _worker(
    broker: BrokerInfo, group: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    return worker_process(
        broker, "tests.integration.canvas.chord_app", group, env, log, "--concurrency", "4"
    )


def _started(directory: Path) -> list[tuple[int, int]]:
    """(member, pid) of every member run that began."""
    runs = []
    for path in directory.glob("started-*"):
        _, member, pid = path.name.split("-")
        runs.append((int(member), int(pid)))
    return runs


def _settled(broker: BrokerInfo, group: str, topic: str, partitions: int) -> bool:
    """True when `group` has committed every record of `topic`."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        for partition in range(partitions):
            end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
            if broker.committed(group, topic, partition) < end:
                return False
        return True
    finally:
        consumer.close()


def _runs(broker: BrokerInfo, topic: str) -> list[dict[str, object]]:
    """Every record of the (one-partition) runs topic."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": unique_name("runs-reader")}
    )
    try:
        key = TopicPartition(topic, 0)
        end = consumer.get_watermark_offsets(key, timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[dict[str, object]] = []
        for _ in range(100):  # bounded: a handful of records at most
            if len(found) >= end:
                break
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    found.append(json.loads(message.value()))
        return found
    finally:
        consumer.close()


def test_kill_9_in_the_middle_of_a_chord_the_callback_still_runs_once(
    kafka_broker: BrokerInfo, kafka_app, new_topic, new_group, tmp_path: Path
) -> None:
    members_topic, callback_topic = new_topic(partitions=3), new_topic(partitions=1)
    runs_topic, results_topic, group = new_topic(), unique_name("results"), new_group()
    env = {
        "CHORD_MEMBERS_TOPIC": members_topic,
        "CHORD_CALLBACK_TOPIC": callback_topic,
        "CHORD_RESULTS": results_topic,
        "CHORD_RUNS": runs_topic,
        "CHORD_DIR": str(tmp_path),
        "CHORD_SLEEP": "1.0",
        # One record per batch: the embedded broker's end offsets are then exact (_settled).
        "KAFKA_JOBS_PRODUCER_BATCH_NUM_MESSAGES": "1",
    }
    # The same tasks on the enqueueing side, one record per batch too.
    app = kafka_app(
        default_topic=members_topic,
        results_topic=results_topic,
        keep_result=True,
        producer_config={"batch.num.messages": 1},
    )

    @app.job(name="chord.member", key="n")
    def member(n: int) -> int:
        raise AssertionError("runs in the worker process only")

    @app.job(name="chord.total", topic=callback_topic)
    def total(values: list[int]) -> int:
        raise AssertionError("runs in the worker process only")

    handle = chord([member.s(n) for n in range(MEMBERS)], total.s()).delay()
    app.flush(30)
    first = _worker(kafka_broker, group, env, tmp_path / "first.log")
    try:
        # Killed while members run: some started, not all of them finished.
        assert wait_until(lambda: len(_started(tmp_path)) >= 3, timeout=60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    finished = [r for r in handle.group.results if r.ready()]
    assert len(finished) < MEMBERS, "the kill came too late to test anything"

    second = _worker(kafka_broker, group, env, tmp_path / "second.log")
    try:
        assert handle.get(timeout=120) == sum(n * n for n in range(MEMBERS))
        # Quiet: every member record committed, then every join and callback record.
        assert wait_until(lambda: _settled(kafka_broker, group, members_topic, 3), timeout=60)
        assert wait_until(lambda: _settled(kafka_broker, group, callback_topic, 1), timeout=60)
    finally:
        assert stop(second) == 0
    runs = _runs(kafka_broker, runs_topic)
    assert len(runs) == 1, runs
    assert runs[0]["pid"] == second.pid
    assert runs[0]["values"] == [n * n for n in range(MEMBERS)]
    # The second worker did run members (the first one left the chord unfinished).
    assert {pid for _, pid in _started(tmp_path)} >= {first.pid, second.pid}
