"""Shared fixtures of the integration tests (every one talks to a real broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kafka_jobs import App, EnqueuedJob, Task
from kafka_jobs.testing import BrokerInfo


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


__all__ = ["BrokerInfo", "enqueue_ledger_jobs", "key_off_partition"]
