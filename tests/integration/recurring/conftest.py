"""Fixtures of the recurring-jobs tests: `recurring_app` worker processes, the job topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError

from kafka_jobs.broker import die_with_parent
from kafka_jobs.connection.client import Client
from kafka_jobs.testing import BrokerInfo, unique_name
from kafka_jobs.wire import read_job_id
from tests import ROOT, ledger

APP = "tests.integration.recurring_app"


class Cluster:
    """Worker processes of one group serving `recurring_app` on one job topic (ours to stop)."""

    def __init__(self, broker: BrokerInfo, topic: str, directory: Path) -> None:
        self.broker = broker
        self.topic = topic
        self.group = unique_name("rec-g")
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = broker.env()
        self.env.update(
            {
                ledger.ENV: str(directory),
                "RECURRING_TOPIC": topic,
                "KAFKA_JOBS_DELAY_TOPIC_PREFIX": f"{topic}.delay",
                "KAFKA_JOBS_GROUP_ID": self.group,
                "KAFKA_JOBS_SUMMARY_INTERVAL": "0",
                "KAFKA_JOBS_STATUS_INTERVAL": "0",
            }
        )
        ledger.create(directory)

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        """One more worker process (extra environment for `recurring_app`)."""
        with open(self.directory / "worker.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "kafka_jobs", "worker", "-A", APP, "--concurrency", "2",
                 "--shutdown-timeout", "10"],
                cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`kafka-jobs schedule ARGS -A recurring_app` on this group."""
        return subprocess.run(
            [sys.executable, "-m", "kafka_jobs", "schedule", *args, "-A", APP],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def events(self, kind: str) -> list[ledger.Event]:
        """The workers' `schedule.*` events of this kind, in order."""
        return [e for e in ledger.events(self.directory) if e.kind == kind]

    def leader(self, timeout: float = 60.0, after: float = 0.0) -> int:
        """The pid of the worker that took the lead last (after `after`), waiting for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leading = [e for e in self.events("schedule.leading") if e.at > after]
            alive = {p.pid for p in self.processes if p.poll() is None}
            if leading and leading[-1].pid in alive:
                return leading[-1].pid
            time.sleep(0.1)
        raise AssertionError(f"no worker leads after {timeout}s; see {self.directory}/worker.log")

    def stop_all(self) -> None:
        """SIGTERM each process we started, then kill what is left (by PID)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def cluster(
    kafka_broker: BrokerInfo, new_topic: Callable[..., str], tmp_path: Path
) -> Iterator[Cluster]:
    """A `Cluster` on a new one-partition job topic; its processes are stopped at the end."""
    made = Cluster(kafka_broker, new_topic(), tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


def job_ids(broker: BrokerInfo, topic: str, timeout: float = 20.0) -> Counter[str]:
    """How many committed records of each job id the job topic holds (read to its end)."""
    client = Client(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": unique_name("count"),
         "enable.partition.eof": True, "isolation.level": "read_committed"}
    )  # fmt: skip
    found: Counter[str] = Counter()
    try:
        client.assign({(topic, 0): OFFSET_BEGINNING})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in client.poll(500, 0.2):
                error = record.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found
                    continue
                job_id = read_job_id(record.headers() or [])
                if job_id is not None:
                    found[job_id] += 1
        raise AssertionError(f"{topic} not read to its end within {timeout}s")
    finally:
        client.close()


def fire_times(ids: Counter[str], name: str = "tick") -> list[int]:
    """The fire times (ms) of a schedule's jobs, sorted, one per record."""
    prefix = f"recurring:{name}:"
    times = []
    for job_id, count in ids.items():
        rest = job_id[len(prefix) :]
        if job_id.startswith(prefix) and rest.isdigit():
            times.extend([int(rest)] * count)
    return sorted(times)
