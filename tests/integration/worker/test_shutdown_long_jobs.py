"""SIGTERM during a long job: done within shutdown_timeout it is committed, else it runs again."""

from __future__ import annotations

from pathlib import Path

from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop


def test_sigterm_waits_for_a_long_job_that_fits_the_shutdown_timeout(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(), new_group()
    enqueue_ledger_jobs(ledger_producer(topic), 1)
    worker = start_worker(
        kafka_broker, topic, group, tmp_path, sleep=6, long_running=True, shutdown_timeout=30
    )
    try:
        assert wait_until(lambda: any(tmp_path.glob("started-0-*")), timeout=60)
    finally:
        code = stop(worker)
    assert code == 0
    assert [e.seq for e in ledger.executions(tmp_path)] == [0]
    assert kafka_broker.committed(group, topic) == 1


def test_sigterm_past_the_shutdown_timeout_leaves_the_job_uncommitted_for_the_next_worker(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(), new_group()
    enqueue_ledger_jobs(ledger_producer(topic), 1)
    worker = start_worker(
        kafka_broker, topic, group, tmp_path, sleep=20, long_running=True, shutdown_timeout=1
    )
    try:
        assert wait_until(lambda: any(tmp_path.glob("started-0-*")), timeout=60)
    finally:
        code = stop(worker, timeout=30)
    assert code == 1, "a shutdown that abandoned a job is not a clean exit"
    assert ledger.executions(tmp_path) == []
    assert kafka_broker.committed(group, topic) < 1

    restarted = start_worker(kafka_broker, topic, group, tmp_path)
    try:
        assert wait_until(lambda: [e.seq for e in ledger.executions(tmp_path)] == [0], timeout=60)
    finally:
        assert stop(restarted) == 0
