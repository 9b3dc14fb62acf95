"""Virtual partitions: records finished above the commit mark do not run again after kill -9.

One slow key holds the partition's committed offset; the records of other keys
behind it finish and travel in the commit's metadata. The worker is killed; the
next one reads that metadata from the broker and runs only what was not done.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from kafka_jobs.processing import offset_metadata
from kafka_jobs.testing import BrokerInfo, broker_returns_commit_metadata, wait_until
from tests import ledger
from tests.integration.conftest import start_worker, stop

FAST = 40


def committed(broker: BrokerInfo, group: str, topic: str) -> tuple[int, set[int]]:
    """The group's committed offset on partition 0 and the done offsets its metadata names."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return tp.offset, offset_metadata.decode(tp.offset, tp.metadata)


def test_finished_records_above_the_mark_survive_kill_9(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    if not broker_returns_commit_metadata(kafka_broker.bootstrap_servers):
        pytest.skip("probe: the broker does not return offset-commit metadata")
    topic, group = new_topic(), new_group()
    task = ledger_producer(topic)
    task.delay(0, "slow")  # offset 0: holds the mark
    for seq in range(1, FAST + 1):
        task.delay(seq, f"k{seq}")
    task.app.flush(30)

    first = start_worker(
        kafka_broker, topic, group, tmp_path, virtual=True, slow_key="slow", slow_seconds=120
    )
    try:
        # The guarantee lives on the broker: the mark is held at 0 and the commit's
        # metadata names finished records above it (lanes behind the slow key wait).
        assert wait_until(
            lambda: (
                committed(kafka_broker, group, topic)[0] == 0
                and len(committed(kafka_broker, group, topic)[1]) >= FAST // 2
            ),
            timeout=60,
            interval=0.2,
        ), f"committed: {committed(kafka_broker, group, topic)}"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    mark, done = committed(kafka_broker, group, topic)  # what the next owner will read
    before = ledger.executions(tmp_path)
    assert mark == 0 and 0 not in {e.seq for e in before}, "the slow job finished before the kill"
    assert done <= {e.offset for e in before}, "metadata named a record that never ran"

    second = start_worker(kafka_broker, topic, group, tmp_path, virtual=True)
    try:
        assert wait_until(lambda: committed(kafka_broker, group, topic)[0] == FAST + 1, timeout=60)
    finally:
        assert stop(second) == 0
    again = [e for e in ledger.executions(tmp_path) if e.pid == second.pid]
    assert not {e.offset for e in again} & done, "a record the metadata named ran again"
    assert {e.seq for e in ledger.executions(tmp_path)} == set(range(FAST + 1)), "a record was lost"
