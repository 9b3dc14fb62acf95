"""The jobs of `bench/process_pool.py`: one CPU-bound job for kafka-jobs, Celery and raw consumers.

Every side runs the same function, `cpu_job(i, key)`: `ROUNDS` iterations of pure-Python
integer arithmetic (about 15 ms on the benchmark machine), holding the GIL throughout.

- kafka-jobs: `python -m kafka_jobs worker -A bench.pool_app --pool threads|processes`;
  the process pool's spawned children import this module too (`app`, task `bench.cpu`).
- Celery: `celery -A bench.pool_app:celery_app worker --pool prefork` (task `bench.cpu`,
  configured like `bench/celery_app.py` from its ``BENCH_CELERY_*`` variables).
- raw confluent-kafka: `python -m bench.pool_app raw TOPIC GROUP INDEX COUNT`, a plain
  consume loop over the partitions `p` with `p % COUNT == INDEX` (`assign()`, no group join).

Environment, set by the benchmark before it starts a process (spawned children inherit it):

- ``BENCH_POOL_TOPIC``: the topic of the kafka-jobs job
- ``BENCH_POOL_MARKS``: the file each job appends ``job <i> <start> <end> <pid>`` to, and
  each process ``ready <pid> <ppid> <time>`` when it imported this module (one `os.write`
  of one line each, O_APPEND; no file: nothing is written). Times are `time.monotonic()`
  (CLOCK_MONOTONIC: one clock for every process of the machine).
- ``BENCH_POOL_ROUNDS``: iterations per job (default `ROUNDS`)
- ``BENCH_POOL_TOPIC_OPTIONS``: JSON object of `app.configure_topic` options for the topic
  (e.g. ``{"long_running": true}``); default none
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from typing import Any

from kafka_jobs import App

TASK_NAME = "bench.cpu"
ROUNDS = 350_000  # about 15 ms of one core here (43 ns per iteration)
TOPIC = os.environ.get("BENCH_POOL_TOPIC", "bench-pool")
MARKS = os.environ.get("BENCH_POOL_MARKS", "")
JOB_ROUNDS = int(os.environ.get("BENCH_POOL_ROUNDS", "0") or ROUNDS)
TOPIC_OPTIONS: dict[str, Any] = json.loads(os.environ.get("BENCH_POOL_TOPIC_OPTIONS") or "{}")

_fd: int | None = None


def _mark(line: str) -> None:
    """Append one line to the marks file, in one write (several processes append to it)."""
    global _fd
    if not MARKS:
        return
    if _fd is None:
        _fd = os.open(MARKS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, (line + "\n").encode())


def burn(rounds: int) -> int:
    """Pure-Python integer arithmetic: CPU-bound, holds the GIL."""
    x = 0
    for i in range(rounds):
        x = (x * 31 + i) % 1_000_003
    return x


def cpu_job(i: int, key: str) -> None:
    """The benchmark's job: `JOB_ROUNDS` rounds of `burn`, then a mark with its times."""
    start = time.monotonic()
    burn(JOB_ROUNDS)
    _mark(f"job {i} {start:.6f} {time.monotonic():.6f} {os.getpid()}")


_mark(f"ready {os.getpid()} {os.getppid()} {time.monotonic():.6f}")

app = App()
cpu = app.job(topic=TOPIC, key="key", name=TASK_NAME)(cpu_job)
if TOPIC_OPTIONS:
    app.configure_topic(TOPIC, **TOPIC_OPTIONS)


# --- celery ---------------------------------------------------------------------------


def make_celery(broker_url: str, queue: str, transport_options: dict[str, Any]) -> Any:
    """A Celery app with task `bench.cpu` = `cpu_job`, set up as `bench/celery_app.py` does."""
    from celery import Celery  # type: ignore[import-untyped]

    from bench import celery_app

    celery = Celery("bench-pool", broker=broker_url)
    celery_app.configure(celery, queue, transport_options)
    celery.task(name=TASK_NAME, shared=False)(cpu_job)
    return celery


@functools.cache
def _celery_from_env() -> Any:
    from bench import celery_app

    return make_celery(celery_app.BROKER_URL, celery_app.QUEUE, celery_app.TRANSPORT_OPTIONS)


def __getattr__(name: str) -> Any:
    """`celery_app`, built on first use: kafka-jobs processes do not import Celery."""
    if name == "celery_app":
        return _celery_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- raw confluent-kafka ------------------------------------------------------------------


def raw_consume(topic: str, group: str, index: int, count: int, partitions: int) -> None:
    """Consume the partitions `p % count == index` from the start and run each record's call.

    `consume(1000, 0.1)`, `json.loads` per value, an asynchronous commit every second, as
    the raw worker of `bench/throughput.py`; until SIGTERM.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(app.settings.consumer_settings(group))
    mine = [p for p in range(partitions) if p % count == index]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in mine])
    last_commit = time.monotonic()
    try:
        while not stopping:
            for record in consumer.consume(1000, 0.1):
                if stopping:
                    break
                if record.error() is not None:
                    continue
                call = json.loads(record.value())  # type: ignore[arg-type]
                cpu_job(*call["args"], **call["kwargs"])
            now = time.monotonic()
            if now - last_commit >= 1.0:
                last_commit = now
                offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
                if offsets:
                    consumer.commit(offsets=offsets, asynchronous=True)
    finally:
        consumer.close()


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[1] != "raw":
        sys.exit("usage: python -m bench.pool_app raw TOPIC GROUP INDEX COUNT PARTITIONS")
    topic_, group_, index_, count_, partitions_ = sys.argv[2:]
    raw_consume(topic_, group_, int(index_), int(count_), int(partitions_))
