"""Fixtures of the Celery bridge tests: Celery on the session's Kafka broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from tests.bridge import proj

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def celery_config(
    celery_kafka_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Kafka broker, SQLite result backend."""
    results = tmp_path_factory.mktemp("celery") / "results.sqlite"
    return {
        **celery_kafka_config,
        "result_backend": f"db+sqlite:///{results}",
        "task_routes": {"proj.mul": {"queue": celery_kafka_config["task_default_queue"] + "-b"}},
    }


@pytest.fixture(scope="session")
def celery_session_app(celery_config: dict[str, Any]) -> Iterator[Any]:
    """The tests' project app, configured for this session (tasks live in `proj`)."""
    proj.app.conf.update(celery_config)
    yield proj.app


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters(celery_config: dict[str, Any]) -> dict[str, Any]:
    queue = celery_config["task_default_queue"]
    return {"concurrency": 4, "queues": [queue, queue + "-b"]}


class WorkerProcesses:
    """`celery -A tests.bridge.proj worker` subprocesses on the session broker."""

    def __init__(self, broker: BrokerInfo, tmp: Path) -> None:
        self.broker = broker
        self.tmp = tmp
        self.ledger = tmp / "ledger.txt"
        self.queue = unique_name("celery-q")
        self.config: dict[str, Any] = {
            "broker_url": f"kafkajobs://{broker.bootstrap_servers}",
            "broker_transport_options": {
                "group_id": unique_name("celery-g"),
                "consumer_config": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
            },
            "task_default_queue": self.queue,
            "result_backend": f"db+sqlite:///{tmp / 'results.sqlite'}",
            "control_exchange": unique_name("control"),
        }
        self.extra_env: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PROJ_CONFIG"] = json.dumps(self.config)
        env["PROJ_LEDGER"] = str(self.ledger)
        env["PYTHONPATH"] = str(ROOT)
        env.update(self.extra_env)
        return env

    def app(self) -> Any:
        """A client app configured like the workers (send tasks by name, remote control)."""
        client = Celery("proj-client", set_as_current=False)
        client.conf.update(self.config)
        return client

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115  (closed by stop_all)
        self._logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.bridge.proj",
                "worker",
                "-n",
                f"{name}@%h",
                "-l",
                "INFO",
                *args,
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, text: str, timeout: float) -> bool:
        path = self.tmp / f"{name}.log"
        return wait_until(
            lambda: path.exists() and text in path.read_text(errors="replace"), timeout
        )

    def executions(self) -> Counter[int]:
        if not self.ledger.exists():
            return Counter()
        return Counter(int(line.split()[0]) for line in self.ledger.read_text().splitlines())

    def started(self) -> set[int]:
        """Seqs of `proj.record` runs that slept, once their sleep began."""
        path = self.ledger.with_name(self.ledger.name + ".started")
        return {int(line) for line in path.read_text().split()} if path.exists() else set()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in self._logs:
            log.close()


@pytest.fixture
def celery_processes(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> Iterator[Callable[[], WorkerProcesses]]:
    made: list[WorkerProcesses] = []

    def make() -> WorkerProcesses:
        made.append(WorkerProcesses(kafka_broker, tmp_path))
        return made[-1]

    yield make
    for processes in made:
        processes.stop_all()
