"""Fixtures of the processing integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kafka_jobs.testing import BrokerInfo
from tests.integration.effects import Reader


@pytest.fixture
def reader(kafka_broker: BrokerInfo) -> Iterator[Callable[[str], Reader]]:
    """Factory: `reader(topic)` reads that topic from its start; closed after the test."""
    opened: list[Reader] = []

    def make(topic: str) -> Reader:
        opened.append(Reader(kafka_broker, topic))
        return opened[-1]

    yield make
    for one in opened:
        one.close()
