"""Time limits and revoke(terminate=True) on a real broker: thread, process-pool and async jobs."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from kafka_jobs import JobRevoked, SoftTimeLimitExceeded, dlq
from kafka_jobs.testing import BrokerInfo, wait_until
from tests.integration.conftest import stop, worker_process


def _events(app, *names: str) -> list[tuple[str, dict[str, object]]]:
    seen: list[tuple[str, dict[str, object]]] = []
    app.events.subscribe(
        lambda event: (
            seen.append((event.name, dict(event.payload))) if event.name in names else None
        )
    )
    return seen


def _committed(worker, topic: str) -> int | None:
    for report in worker.report():
        if report.topic == topic and report.partition == 0:
            return report.committed
    return None


def test_a_stuck_thread_job_is_ended_by_its_hard_limit_while_the_partition_goes_on(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, commit_interval=0.2)
    release = threading.Event()  # lets the abandoned thread return at the end
    returned: list[str] = []
    ran: list[int] = []

    @app.job(time_limit=1.0, retries=0)
    def stuck() -> str:
        while not release.wait(0.05):  # a job that never ends by itself
            pass
        returned.append("stuck")
        return "too late"

    @app.job
    def quick(n: int) -> None:
        ran.append(n)

    stuck_job = stuck.delay()
    for n in range(5):
        quick.delay(n)
    app.flush(30)
    seen = _events(app, "job.time_limited", "job.succeeded", "job.dead_lettered")
    started = time.monotonic()
    with app.worker(concurrency=1, group_id=f"g-{topic}") as worker:
        first_threads = list(worker.pool.threads)
        # One worker thread: the later jobs of the partition can only run on its replacement.
        assert wait_until(lambda: ran == [0, 1, 2, 3, 4], timeout=30), ran
        elapsed = time.monotonic() - started
        # Everything is committed, the stuck job's offset included (it was dead-lettered).
        assert wait_until(lambda: _committed(worker, topic) == 6, timeout=30)
        letters = dlq.read(app, f"{topic}.dlq").letters
        assert len(letters) == 1
        assert letters[0].info["reason"] == "time-limit"
        assert letters[0].info["exception"] == "kafka_jobs.errors.TimeLimitExceeded"
        assert letters[0].info["offset"] == "0" and letters[0].task.endswith("stuck")
        # The worker kept its concurrency: a new thread, the stuck one left out.
        assert len(worker.pool.threads) == 1
        assert worker.pool.threads[0] is not first_threads[0]
        assert worker.pool.threads[0].is_alive()
        # The abandoned thread returns late: its value is discarded, nothing more happens.
        release.set()
        assert wait_until(lambda: not first_threads[0].is_alive(), timeout=10)
        assert returned == ["stuck"]
        quick.delay(5)
        app.flush(30)
        assert wait_until(lambda: _committed(worker, topic) == 7, timeout=30)
    assert elapsed >= 1.0, "the later jobs ran before the stuck one's limit"
    limited = [p for name, p in seen if name == "job.time_limited"]
    assert [(p["job_id"], p["limit"], p["offset"]) for p in limited] == [(stuck_job.id, "hard", 0)]
    assert not [p for name, p in seen if name == "job.succeeded" and p["job_id"] == stuck_job.id]
    assert len([p for name, p in seen if name == "job.dead_lettered"]) == 1
    assert ran == [0, 1, 2, 3, 4, 5]


def test_a_thread_job_catches_its_soft_limit_and_cleans_up(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, soft_time_limit=0.3, time_limit=20)
    outcome: list[str] = []

    @app.job
    def slow() -> None:
        try:
            for _ in range(400):  # 20 s in small steps
                time.sleep(0.05)
            outcome.append("finished")
        except SoftTimeLimitExceeded:
            outcome.append("cleaned up")

    @app.job(soft_time_limit=0)  # its own setting wins over the app's: no limit
    def unlimited() -> None:
        time.sleep(0.6)
        outcome.append("unlimited finished")

    slow.delay()
    unlimited.delay()
    app.flush(30)
    seen = _events(app, "job.time_limited", "job.failed")
    with app.worker(concurrency=1, group_id=f"g-{topic}"):
        assert wait_until(lambda: len(outcome) == 2, timeout=30), outcome
    assert outcome == ["cleaned up", "unlimited finished"]
    assert [(n, p["limit"]) for n, p in seen] == [("job.time_limited", "soft")]


def test_the_worker_default_and_a_topic_limit(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, time_limit=30)
    app.configure_topic(topic, soft_time_limit=0.3, retries=0)
    caught: list[str] = []

    @app.job
    def slow() -> None:
        try:
            for _ in range(400):
                time.sleep(0.05)
        except SoftTimeLimitExceeded:
            caught.append("soft")
            raise  # not caught for good: the job fails with it, per its policy

    slow.delay()
    app.flush(30)
    with app.worker(concurrency=1, group_id=f"g-{topic}"):
        assert wait_until(lambda: dlq.read(app, f"{topic}.dlq").letters, timeout=30)
    (letter,) = dlq.read(app, f"{topic}.dlq").letters
    assert caught == ["soft"]
    assert letter.info["reason"] == "job-failed"
    assert letter.info["exception"] == "kafka_jobs.errors.SoftTimeLimitExceeded"


def test_a_hard_limit_retries_per_the_policy(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    attempts: list[int] = []

    @app.job(time_limit=0.5, retries=1, backoff=0.05)
    def sometimes_stuck() -> None:
        from kafka_jobs import current_job

        attempt = current_job().attempt
        attempts.append(attempt)
        if attempt == 1:
            time.sleep(5)  # inside C code: only the hard limit gets it out of the way

    sometimes_stuck.delay()
    app.flush(30)
    with app.worker(concurrency=1, group_id=f"g-{topic}") as worker:
        assert wait_until(lambda: attempts == [1, 2], timeout=30), attempts
        assert wait_until(lambda: _committed(worker, topic) == 1, timeout=30)
    assert not dlq.read(app, f"{topic}.dlq").letters


def test_async_jobs_get_their_soft_limit_and_are_cancelled_at_their_hard_limit(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    notes: list[str] = []

    @app.job(soft_time_limit=0.3, time_limit=10)
    async def cleans_up() -> None:
        try:
            await asyncio.sleep(20)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0.05)  # cleaning up may await: the task was un-cancelled
            notes.append("cleaned up")

    @app.job(time_limit=0.5, retries=0)
    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            notes.append("cancelled")
            raise

    @app.job
    async def after(n: int) -> None:
        notes.append(f"after {n}")

    cleans_up.delay()
    stuck.delay()
    after.delay(1)
    app.flush(30)
    with app.worker(concurrency=1, group_id=f"g-{topic}") as worker:
        assert wait_until(lambda: "after 1" in notes, timeout=30), notes
        assert wait_until(lambda: _committed(worker, topic) == 3, timeout=30)
    assert notes == ["cleaned up", "cancelled", "after 1"]
    (letter,) = dlq.read(app, f"{topic}.dlq").letters
    assert letter.info["reason"] == "time-limit"


def _ledger(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _limits_jobs(
    broker: BrokerInfo, topic: str, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """`timelimits_app`, (re)loaded for `topic` on `broker`; its jobs write to `ledger`."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("LIMITS_TOPIC", topic)
    monkeypatch.setenv("LIMITS_LEDGER", str(ledger))
    return importlib.reload(importlib.import_module("tests.integration.processing.timelimits_app"))


def test_process_pool_soft_limit_and_a_stuck_child_killed_and_replaced(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic()
    ledger = tmp_path / "ledger.txt"
    jobs = _limits_jobs(kafka_broker, topic, ledger, monkeypatch)
    app = jobs.app
    try:
        jobs.cleans_up.delay(1)
        jobs.stuck.delay(2)
        for n in range(3, 6):
            jobs.quick.delay(n)
        app.flush(30)
        with app.worker(pool="processes", concurrency=1, group_id=f"g-{topic}") as worker:
            assert worker.processes is not None
            assert wait_until(lambda: len(_ledger(ledger)) == 5, timeout=60), _ledger(ledger)
            assert wait_until(lambda: _committed(worker, topic) == 5, timeout=30)
            assert worker.processes.alive() == 1
            assert worker.processes.replaced == 1
        lines = _ledger(ledger)
        assert [line[:2] for line in lines] == [
            ["cleaned", "1"],
            ["stuck", "2"],
            ["quick", "3"],
            ["quick", "4"],
            ["quick", "5"],
        ]
        stuck_pid = int(lines[1][2])
        assert int(lines[0][2]) == stuck_pid  # one child ran both...
        assert {int(line[2]) for line in lines[2:]} != {stuck_pid}  # ...and was replaced
        assert stuck_pid != os.getpid()
        (letter,) = dlq.read(app, f"{topic}.dlq").letters
        assert letter.info["reason"] == "time-limit"
        assert letter.info["exception"] == "kafka_jobs.errors.TimeLimitExceeded"
    finally:
        app.close(5)


@pytest.mark.parametrize("how", ["app", "handle", "cli"])
def test_revoke_with_terminate_ends_a_running_job(
    kafka_app, kafka_broker: BrokerInfo, new_topic, how: str
) -> None:
    topic = new_topic()
    app = kafka_app(
        default_topic=topic, revoke_topic=f"{topic}.revoked", results_topic=f"{topic}.results"
    )
    started = threading.Event()
    release = threading.Event()
    runs: list[str] = []
    after: list[int] = []

    @app.job(retries=3, backoff=0.05, keep_result=True)
    def endless() -> None:
        runs.append("run")
        started.set()
        while not release.wait(0.05):
            pass

    @app.job
    def later(n: int) -> None:
        after.append(n)

    handle = endless.delay()
    later.delay(1)
    app.flush(30)
    seen = _events(app, "job.revoked", "job.dead_lettered", "job.retrying")
    try:
        with app.worker(concurrency=1, group_id=f"g-{topic}") as worker:
            assert started.wait(30)
            if how == "app":
                assert app.revoke(handle.id, terminate=True) == 1
            elif how == "handle":
                handle.revoke(terminate=True)
            else:
                env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers}
                env["KAFKA_JOBS_REVOKE_TOPIC"] = f"{topic}.revoked"
                done = subprocess.run(
                    [sys.executable, "-m", "kafka_jobs", "revoke", handle.id, "--terminate"],
                    env=env,
                    capture_output=True,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr.decode()
            assert wait_until(lambda: after == [1], timeout=30), after
            assert wait_until(lambda: _committed(worker, topic) == 2, timeout=30)
            with pytest.raises(JobRevoked):
                handle.get(timeout=30)
            assert handle.state == "revoked"
    finally:
        release.set()
    assert runs == ["run"], "a terminated job must not be retried"
    revoked = [p for name, p in seen if name == "job.revoked"]
    assert [p["job_id"] for p in revoked] == [handle.id]
    assert not [name for name, _ in seen if name != "job.revoked"]
    assert not dlq.read(app, f"{topic}.dlq").letters


def test_worker_time_limit_flag_ends_a_stuck_job(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic()
    ledger = tmp_path / "ledger.txt"
    jobs = _limits_jobs(kafka_broker, topic, ledger, monkeypatch)
    app = jobs.app
    try:
        jobs.hangs.delay(1)
        for n in (2, 3):
            jobs.quick.delay(n)
        app.flush(30)
        worker = worker_process(
            kafka_broker,
            "tests.integration.processing.timelimits_app",
            f"g-{topic}",
            {},  # the environment set above
            tmp_path / "worker.log",
            *("--concurrency", "1", "--time-limit", "1", "--summary-interval", "0"),
        )
        try:
            assert wait_until(lambda: len(_ledger(ledger)) == 3, timeout=60), _ledger(ledger)
            assert wait_until(lambda: dlq.read(app, f"{topic}.dlq").letters, timeout=30)
        finally:
            code = stop(worker)
        assert [line[:2] for line in _ledger(ledger)] == [
            ["hangs", "1"],
            ["quick", "2"],
            ["quick", "3"],
        ]
        (letter,) = dlq.read(app, f"{topic}.dlq").letters
        assert letter.info["reason"] == "time-limit"
        assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        app.close(5)


def test_terminate_kills_and_replaces_a_process_pool_child(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic()
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("KAFKA_JOBS_REVOKE_TOPIC", f"{topic}.revoked")
    jobs = _limits_jobs(kafka_broker, topic, ledger, monkeypatch)
    app = jobs.app
    try:
        handle = jobs.spins.delay(1)
        jobs.quick.delay(2)
        app.flush(30)
        with app.worker(pool="processes", concurrency=1, group_id=f"g-{topic}") as worker:
            assert worker.processes is not None
            assert wait_until(lambda: len(_ledger(ledger)) == 1, timeout=60)
            assert app.revoke(handle.id, terminate=True) == 1
            assert wait_until(lambda: len(_ledger(ledger)) == 2, timeout=30), _ledger(ledger)
            assert wait_until(lambda: _committed(worker, topic) == 2, timeout=30)
            assert worker.processes.replaced == 1
            assert worker.processes.alive() == 1
        lines = _ledger(ledger)
        assert [line[:2] for line in lines] == [["spins", "1"], ["quick", "2"]]
        assert lines[0][2] != lines[1][2]  # the terminated child was replaced
        assert not dlq.read(app, f"{topic}.dlq").letters  # settled as revoked, not retried
    finally:
        app.close(5)
