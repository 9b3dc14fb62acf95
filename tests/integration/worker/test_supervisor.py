"""`kafka-jobs worker --processes N`: children share the group, are restarted, stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from kafka_jobs.broker import free_port
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop


def _children(port: int) -> tuple[int, list[int]]:
    """The supervisor's /ready status and the pids of the children it reports."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
            status, body = answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        status, body = refused.code, json.loads(refused.read())
    except OSError:
        return 0, []
    return status, sorted(int(pid) for pid in body["children"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_children_share_the_group_a_killed_one_is_restarted_and_sigterm_stops_all(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group, port = new_topic(partitions=6), new_group(), free_port()
    supervisor = start_worker(
        kafka_broker,
        topic,
        group,
        tmp_path,
        sleep=0.01,
        extra_args=("--processes", "2", "--health-port", str(port), "--health-host", "127.0.0.1"),
    )
    try:
        # Ready means both children run, answer, and have partitions of the group.
        assert wait_until(lambda: _children(port)[0] == 200, timeout=90), _children(port)
        first = _children(port)[1]
        assert len(first) == 2
        enqueue_ledger_jobs(ledger_producer(topic), 400)
        assert wait_until(lambda: ledger.distinct(tmp_path) >= 400, timeout=90)
        assert {e.pid for e in ledger.executions(tmp_path)} <= set(first)
        assert len({e.pid for e in ledger.executions(tmp_path)}) == 2  # both took partitions

        os.kill(first[0], signal.SIGKILL)
        replaced = lambda: (  # noqa: E731
            len(_children(port)[1]) == 2 and first[0] not in _children(port)[1]
        )
        assert wait_until(replaced, timeout=30)
        assert wait_until(lambda: _children(port)[0] == 200, timeout=90)
        second = _children(port)[1]
        enqueue_ledger_jobs(ledger_producer(topic), 400)  # seq 0..399 again: 800 runs at least
        assert wait_until(lambda: len(ledger.executions(tmp_path)) >= 800, timeout=90)
    finally:
        code = stop(supervisor, timeout=90)
    assert code == 0
    assert not any(_alive(pid) for pid in second)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert f"pid {first[0]}) exited with -9; restarting" in log


def test_a_child_over_its_memory_limit_is_recycled(
    kafka_broker: BrokerInfo, new_topic, new_group, tmp_path: Path
) -> None:
    topic, group, port = new_topic(), new_group(), free_port()
    supervisor = start_worker(
        kafka_broker,
        topic,
        group,
        tmp_path,
        extra_args=(
            *("--processes", "1", "--max-memory-per-child", "20"),  # any Python worker is over
            *("--health-port", str(port), "--health-host", "127.0.0.1"),
        ),
    )
    try:
        assert wait_until(lambda: len(_children(port)[1]) == 1, timeout=60)
        first = _children(port)[1][0]
        recycled = lambda: _children(port)[1] not in ([], [first])  # noqa: E731
        assert wait_until(recycled, timeout=60)
    finally:
        stop(supervisor, timeout=90)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert f"(pid {first}) uses" in log and "recycling it" in log
    assert f"(pid {first}) recycled" in log


def test_children_run_the_process_pool_too(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group, port = new_topic(partitions=4), new_group(), free_port()
    supervisor = start_worker(
        kafka_broker,
        topic,
        group,
        tmp_path,
        concurrency=2,
        extra_args=(
            *("--processes", "2", "--pool", "processes"),
            *("--health-port", str(port), "--health-host", "127.0.0.1"),
        ),
    )
    try:
        assert wait_until(lambda: _children(port)[0] == 200, timeout=90), _children(port)
        workers = set(_children(port)[1])
        enqueue_ledger_jobs(ledger_producer(topic), 200)
        assert wait_until(lambda: ledger.distinct(tmp_path) >= 200, timeout=120)
    finally:
        code = stop(supervisor, timeout=90)
    assert code == 0
    runners = {e.pid for e in ledger.executions(tmp_path)}
    # The jobs ran in the pool's children of the worker processes, not in the workers.
    assert runners and not runners & workers
    assert {e.seq for e in ledger.executions(tmp_path)} == set(range(200))
