"""kill -9 and SIGTERM of a worker process mid-run: nothing lost, clean stops re-run nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop

JOBS = 3000


def test_kill_9_mid_run_then_restart_loses_nothing(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(partitions=6), new_group()
    enqueue_ledger_jobs(ledger_producer(topic), JOBS)
    first = start_worker(kafka_broker, topic, group, tmp_path, sleep=0.003)
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= JOBS // 5, timeout=60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    ran_before_kill = len(ledger.executions(tmp_path))
    assert ran_before_kill < JOBS, "the kill came too late to test anything"

    second = start_worker(kafka_broker, topic, group, tmp_path)
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= JOBS, timeout=120)
    finally:
        assert stop(second) == 0
    executions = ledger.executions(tmp_path)
    assert {e.seq for e in executions} == set(range(JOBS))
    # Only work done before the kill can run twice (its offsets were not committed yet).
    assert ledger.duplicates(executions) <= ran_before_kill
    ledger.assert_order_per_process(executions)


def test_sigterm_finishes_in_flight_commits_and_exits_0(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(partitions=6), new_group()
    enqueue_ledger_jobs(ledger_producer(topic), JOBS)
    first = start_worker(kafka_broker, topic, group, tmp_path, sleep=0.003)
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= JOBS // 5, timeout=60)
    finally:
        code = stop(first)
    assert code == 0
    ran_first = len(ledger.executions(tmp_path))
    assert ran_first < JOBS, "the stop came too late to test anything"

    second = start_worker(kafka_broker, topic, group, tmp_path)
    try:
        assert wait_until(lambda: ledger.distinct(tmp_path) >= JOBS, timeout=120)
    finally:
        assert stop(second) == 0
    executions = ledger.executions(tmp_path)
    assert {e.seq for e in executions} == set(range(JOBS))
    # A clean stop commits every finished job, so the restart re-runs none of them.
    assert ledger.duplicates(executions) == 0
