"""The process pool: sync jobs run in child processes; a dying child fails only its job."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from kafka_jobs import dlq
from kafka_jobs.testing import BrokerInfo, wait_until


def _runs(ledger: Path) -> list[list[str]]:
    return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []


def test_children_run_jobs_and_a_dead_child_fails_only_its_job(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(partitions=3)
    ledger = tmp_path / "runs.txt"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("POOL_TOPIC", topic)
    monkeypatch.setenv("POOL_LEDGER", str(ledger))
    pool_app = importlib.reload(importlib.import_module("tests.integration.pool_app"))
    app = pool_app.app
    fates = {7: "exit", 23: "sigkill", 31: "raise"}
    for n in range(60):
        pool_app.work.delay(n, fates.get(n, "ok"))
    app.flush(30)
    with app.worker(pool="processes", concurrency=2, group_id=f"pool-{topic}") as worker:
        assert worker.processes is not None
        first_pids = set(worker.processes.pids())
        assert wait_until(lambda: len({r[0] for r in _runs(ledger)}) >= 59, timeout=120)
        assert wait_until(lambda: dlq.read(app, f"{topic}.dlq").letters, timeout=30)
        assert worker.processes.alive() == 2, "the pool did not keep its size"
        assert worker.processes.replaced == 2
        now_pids = set(worker.processes.pids())
    runs = _runs(ledger)
    by_job = {int(r[0]): r for r in runs}
    assert set(by_job) == set(range(60)) - {31}
    # The jobs whose child died ran again (attempt 2), per the retry policy; no other
    # job ran twice: a death fails only the job that was running.
    assert by_job[7][1] == "2" and by_job[23][1] == "2"
    assert len(runs) == 59
    pids = {int(r[2]) for r in runs}
    assert os.getpid() not in pids, "a job ran in the worker's own process"
    assert len(now_pids) == 2 and now_pids != first_pids  # dead children were replaced
    assert len(pids) >= 2, "the jobs did not spread over the children"
    (letter,) = dlq.read(app, f"{topic}.dlq").letters
    # The child's exception came back whole: its class decides retries and is dead-lettered.
    assert letter.info["exception"] == "builtins.LookupError"
    assert letter.info["message"] == "no row 31"
    assert letter.info["attempts"] == "3"
    assert "raised in worker process" in letter.info["traceback"]


def test_manual_offsets_need_the_threads_pool(kafka_app, new_topic) -> None:
    from kafka_jobs.errors import ConfigurationError

    topic = new_topic()
    app = kafka_app(default_topic=topic)
    app.configure_topic(topic, manual_offsets=True)

    @app.job
    def step() -> None: ...

    with pytest.raises(ConfigurationError, match="manual_offsets"):
        app.worker(pool="processes", app_spec="tests.integration.pool_app")


def test_a_value_returned_in_a_child_is_the_result(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(partitions=2)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("POOL_TOPIC", topic)
    monkeypatch.setenv("POOL_LEDGER", str(tmp_path / "runs.txt"))
    monkeypatch.setenv("KAFKA_JOBS_RESULTS_TOPIC", f"{topic}.results")
    pool_app = importlib.reload(importlib.import_module("tests.integration.pool_app"))
    with pool_app.app.worker(pool="processes", concurrency=2, group_id=f"pool-{topic}"):
        handles = [pool_app.square.delay(n) for n in range(6)]
        values = [handle.get(timeout=60) for handle in handles]
    assert [(v["n"], v["square"]) for v in values] == [(n, n * n) for n in range(6)]
    assert os.getpid() not in {v["pid"] for v in values}  # computed in the children
    pool_app.app.close(5)
