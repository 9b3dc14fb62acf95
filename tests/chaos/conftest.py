"""Chaos scenarios: worker processes under kill -9, rebalance storms, outages, poison.

Each scenario records every execution to a SQLite ledger (see `tests/ledger.py`) and checks
it at the end. CI runs them at scale 1 (bounded: a few minutes in all); set
``KAFKA_JOBS_CHAOS_SCALE`` (e.g. 5) for longer local soak runs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kafka_jobs import App
from kafka_jobs.broker import die_with_parent
from kafka_jobs.testing import BrokerInfo, create_topic, unique_name
from tests import ROOT, ledger

SCALE = float(os.environ.get("KAFKA_JOBS_CHAOS_SCALE", "1"))


class Cluster:
    """Worker processes of `chaos_app` on one topic and group, and their ledger."""

    def __init__(self, broker: BrokerInfo, tmp: Path, partitions: int = 6, **env: str) -> None:
        self.broker = broker
        self.tmp = tmp
        self.topic = create_topic(broker.bootstrap_servers, unique_name("chaos"), partitions)
        self.group = unique_name("chaos-g")
        self.ledger = tmp  # the ledger's directory
        ledger.create(self.ledger)
        self.env = {**broker.env(), "CHAOS_TOPIC": self.topic, ledger.ENV: str(self.ledger)}
        self.env["KAFKA_JOBS_DELAY_TOPIC_PREFIX"] = f"{self.topic}.delay"
        self.env.update(env)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.kills: list[tuple[int, float]] = []  # (pid, when)
        self.stops: list[tuple[int, float]] = []
        self._log = open(tmp / "workers.log", "ab")  # noqa: SIM115  (closed in close())
        self.rng = random.Random(int(os.environ.get("KAFKA_JOBS_CHAOS_SEED", "0")) or None)

    def enqueue(self, count: int, keys: int = 200, start: int = 0) -> None:
        """`count` jobs over `keys` keys (seq ascending per key), acknowledged by the broker."""
        app = App(bootstrap_servers=self.broker.bootstrap_servers, default_topic=self.topic)

        @app.job(key="key", name="chaos.record")
        def record(seq: int, key: str) -> None:
            raise AssertionError("runs in the worker processes only")

        for seq in range(start, start + count):
            record.delay(seq, f"k{seq % keys}")
        app.flush(60)
        app.close()

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kafka_jobs",
                "worker",
                "-A",
                "tests.chaos.chaos_app",
                "--group",
                self.group,
                "--concurrency",
                "4",
                "--shutdown-timeout",
                "10",
                *args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # an aborted test run leaves no worker behind
        )
        self.workers.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        self.kills.append((worker.pid, time.time()))

    def stop(self, worker: subprocess.Popen[bytes]) -> None:
        worker.terminate()
        code = worker.wait(60)
        assert code == 0, f"worker {worker.pid} exited {code} on SIGTERM"
        self.stops.append((worker.pid, time.time()))

    def events(self) -> list[ledger.Event]:
        return ledger.events(self.ledger)

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
        self._log.close()


@pytest.fixture
def cluster(kafka_broker: BrokerInfo, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**kwargs: object) -> Cluster:
        made.append(Cluster(kafka_broker, tmp_path, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for item in made:
        item.close()


def settle(chaos: Cluster, total: int, timeout: float = 180.0) -> None:
    """After a storm: the surviving workers (at least one) must finish the backlog.

    A storm that outpaces the group's join rounds can stall progress while it lasts;
    what counts is that nothing is lost once it stops.
    """
    if not chaos.live():
        chaos.start()
    started = time.monotonic()
    deadline = started + timeout
    while ledger.distinct(chaos.ledger) < total and time.monotonic() < deadline:
        time.sleep(2.0)
        progress("after the storm", ledger.distinct(chaos.ledger), total, started)


def progress(label: str, done: int, total: int, started: float) -> None:
    """One line per step, so a long scenario shows where it is."""
    elapsed = time.monotonic() - started
    print(f"[{label}] {done}/{total} jobs ran after {elapsed:.0f} s", flush=True)
