"""A worker app for the chain-under-transactions crash test, run as `kafka-jobs worker -A`.

Environment: CHAIN_TOPIC_1 / _2 / _3 (one topic per step), CHAIN_RESULTS (results
topic), CHAIN_DIR (every run of a step leaves a `<step>-<pid>-<uuid>` file there),
CHAIN_BLOCK_COMMIT (set: the first transaction commit of this process writes
`committing-<pid>` in CHAIN_DIR and blocks, so the test can kill -9 the worker
after the next step was delivered and before it was committed).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

import kafka_jobs.transactions
from kafka_jobs import App

app = App(
    default_topic=os.environ.get("CHAIN_TOPIC_1", "chain-1"),
    results_topic=os.environ.get("CHAIN_RESULTS", "chain-results"),
    keep_result=True,
    canvas_transactions=True,
)


def _ran(step: str) -> None:
    Path(os.environ["CHAIN_DIR"], f"{step}-{os.getpid()}-{uuid.uuid4().hex}").touch()


@app.job(name="chain.first")
def first(x: int) -> int:
    """x + 1."""
    _ran("first")
    return x + 1


@app.job(name="chain.second", topic=os.environ.get("CHAIN_TOPIC_2", "chain-2"))
def second(x: int) -> int:
    """x * 10."""
    _ran("second")
    return x * 10


@app.job(name="chain.third", topic=os.environ.get("CHAIN_TOPIC_3", "chain-3"))
def third(x: int) -> int:
    """x + 5."""
    _ran("third")
    return x + 5


if os.environ.get("CHAIN_BLOCK_COMMIT"):
    _commit = kafka_jobs.transactions._commit
    _blocked = threading.Event()

    def _blocking_commit(producer: Producer, timeout: float) -> None:
        if not _blocked.is_set():
            _blocked.set()
            Path(os.environ["CHAIN_DIR"], f"committing-{os.getpid()}").touch()
            time.sleep(600)  # the test kills this process here
        _commit(producer, timeout)

    kafka_jobs.transactions._commit = _blocking_commit
