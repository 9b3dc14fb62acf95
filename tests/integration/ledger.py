"""Helpers for subprocess tests: start workers of `ledger_app`, read their ledgers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kafka_jobs.broker import die_with_parent
from kafka_jobs.testing import BrokerInfo

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Execution:
    """One line of a ledger."""

    seq: int
    key: str
    partition: int
    offset: int
    pid: int


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
    """A `kafka-jobs worker` process serving the ledger app."""
    env = broker.env()
    env["KAFKA_JOBS_DELAY_TOPIC_PREFIX"] = delay_prefix or f"{topic}.delay"
    env["LEDGER_LONG_RUNNING"] = "1" if long_running else "0"
    env["LEDGER_VIRTUAL"] = "1" if virtual else "0"
    env.update(LEDGER_TOPIC=topic, LEDGER_DIR=str(ledger_dir), LEDGER_SLEEP=str(sleep))
    if slow_key is not None:
        env.update(LEDGER_SLOW_KEY=slow_key, LEDGER_SLOW_SECONDS=str(slow_seconds))
    with open(ledger_dir / "worker.log", "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kafka_jobs",
                "worker",
                "-A",
                "tests.integration.ledger_app",
                "--group",
                group,
                "--concurrency",
                str(concurrency),
                "--shutdown-timeout",
                str(shutdown_timeout),
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # an aborted test run leaves no worker behind
        )


def read_ledger(ledger_dir: Path) -> list[Execution]:
    """Every execution recorded so far, file by file in write order."""
    executions = []
    for path in sorted(ledger_dir.glob("ledger-*.txt")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:  # a line cut by kill -9 cannot happen (one write), but be strict
                raise AssertionError(f"malformed ledger line {line!r} in {path}")
            seq, key, partition, offset, pid = parts
            executions.append(Execution(int(seq), key, int(partition), int(offset), int(pid)))
    return executions


def distinct_seqs(ledger_dir: Path) -> int:
    """How many different jobs ran at least once."""
    return len({e.seq for e in read_ledger(ledger_dir)})


def duplicates(executions: list[Execution]) -> int:
    """Executions beyond the first of each job."""
    return sum(n - 1 for n in Counter(e.seq for e in executions).values())


def assert_order_per_worker_run(executions: list[Execution], by: str = "partition") -> None:
    """Within one worker process, each partition's (or key's) records ran in offset order."""
    last: dict[tuple[int, object], int] = {}
    for e in executions:
        key = (e.pid, getattr(e, by))
        assert e.offset > last.get(key, -1), f"{by} {getattr(e, by)} ran out of order in {e.pid}"
        last[key] = e.offset


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
