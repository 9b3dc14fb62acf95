"""Shared fixtures of the integration tests (every one talks to a real broker)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kafka_jobs import App, EnqueuedJob, Task
from kafka_jobs.broker import die_with_parent
from kafka_jobs.testing import BrokerInfo, unique_name
from tests import ROOT, ledger


@pytest.fixture
def ledger_producer(kafka_app: Callable[..., App]) -> Callable[[str], Task[Any, None]]:
    """Factory: a producer-side task `ledger.record` bound to a topic, for subprocess workers."""

    def make(topic: str) -> Task[Any, None]:
        app = kafka_app(default_topic=topic)

        @app.job(key="key", name="ledger.record")
        def record(seq: int, key: str) -> None:
            raise AssertionError("runs in the worker process only")

        return record

    return make


def enqueue_ledger_jobs(task: Task[Any, None], count: int, keys: int = 60) -> None:
    """Enqueue `count` ledger jobs over `keys` keys, then wait for the broker's acks."""
    for seq in range(count):
        task.delay(seq, f"k{seq % keys}")
    task.app.flush(30)


def key_off_partition(partition: int | None, enqueue: Callable[[str], EnqueuedJob]) -> str:
    """The first key whose probe job (`enqueue(key)`, acknowledged) lands off `partition`.

    Each probe is a real job on the topic: tests count it in their expectations.
    """
    for key in (f"k{i}" for i in range(50)):
        if enqueue(key).wait(10).partition != partition:
            return key
    raise AssertionError(f"no key out of 50 avoided partition {partition}")


def start_worker(
    broker: BrokerInfo,
    topic: str,
    group: str,
    ledger_dir: Path,
    *,
    sleep: float = 0.0,
    concurrency: int = 4,
    shutdown_timeout: float = 30.0,
    delay_prefix: str | None = None,
    long_running: bool = False,
    virtual: bool = False,
    slow_key: str | None = None,
    slow_seconds: float = 0.0,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """A `kafka-jobs worker` process serving `ledger_app`; its ledger is in `ledger_dir`."""
    ledger.create(ledger_dir)
    env = {
        ledger.ENV: str(ledger_dir),
        "KAFKA_JOBS_DELAY_TOPIC_PREFIX": delay_prefix or f"{topic}.delay",
        "LEDGER_LONG_RUNNING": "1" if long_running else "0",
        "LEDGER_VIRTUAL": "1" if virtual else "0",
        "LEDGER_TOPIC": topic,
        "LEDGER_SLEEP": str(sleep),
    }
    if slow_key is not None:
        env.update(LEDGER_SLOW_KEY=slow_key, LEDGER_SLOW_SECONDS=str(slow_seconds))
    return worker_process(
        broker,
        "tests.integration.ledger_app",
        group,
        env,
        ledger_dir / "worker.log",
        *("--concurrency", str(concurrency), "--shutdown-timeout", str(shutdown_timeout)),
        *extra_args,
    )


def worker_process(
    broker: BrokerInfo, app: str, group: str, env: dict[str, str], log: Path, *args: str
) -> subprocess.Popen[bytes]:
    """A `kafka-jobs worker -A app --group group *args` process on `broker`.

    `env` is added to the broker's environment (`BrokerInfo.env`); the worker's output
    is appended to `log`.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kafka_jobs", "worker", "-A", app, "--group", group, *args],
            cwd=ROOT,
            env={**broker.env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # an aborted test run leaves no worker behind
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """Terminate a worker we started (by its PID) and return its exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


__all__ = [
    "BrokerInfo",
    "enqueue_ledger_jobs",
    "key_off_partition",
    "start_worker",
    "stop",
    "worker_process",
]


@pytest.fixture
def known_state(kafka_app, new_topic):
    """A worker publishing its state: one partition held by a running long job, one dead letter."""
    slow_topic, fast_topic = new_topic(), new_topic()
    app = kafka_app(
        status_topic=unique_name("status"),
        status_interval=0.3,
        summary_interval=0,
        group_id=unique_name("dash-g"),
    )
    app.configure_topic(slow_topic, long_running=True)
    release = threading.Event()
    ran: list[int] = []

    @app.job(topic=slow_topic)
    def hold() -> None:
        release.wait(60)

    @app.job(topic=fast_topic, retries=0)
    def charge(n: int) -> None:
        ran.append(n)
        if n == 13 and ran.count(13) == 1:
            raise ValueError("card declined for 13")

    hold.delay()
    for n in (1, 13, 2):
        charge.delay(n)
    app.flush(10)
    worker = app.worker(concurrency=2).start()
    worker.start_reporting()
    try:
        yield app, worker, slow_topic, fast_topic, ran
    finally:
        release.set()
        worker.stop()
        worker.join(30)


@pytest.fixture
def dashboard():
    """`make(app, **options)`: a dashboard's test client; its sampler stops at the end."""
    made = []

    def make(app, **options):
        from kafka_jobs.web.views import create_app

        web = create_app(app, **options)
        made.append(web)
        return web.test_client()

    yield make
    for web in made:
        web.extensions["kafka_jobs"]["sampler"].stop()
