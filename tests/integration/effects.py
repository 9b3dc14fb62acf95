"""Reading what jobs did back from the broker: a topic reader and an effects writer.

A job writes one record per run to an effects topic (acknowledged before the job
goes on), so a single-partition effects topic holds the runs in the order they
wrote, with their wall-clock times; tests assert on that, not on worker memory.
Also used inside process-pool children (see `Effects.from_env`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_jobs.testing import BrokerInfo, unique_name


class Reader:
    """Reads a topic (every partition) from its start; `read()` adds what arrived since.

    Records of one partition keep their order; the topics read in order are single-partition.
    """

    def __init__(self, broker: BrokerInfo, topic: str) -> None:
        self._topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": unique_name("reader"),
                "enable.auto.commit": False,
            }
        )
        self._assigned = False
        self.records: list[Any] = []

    def read(self) -> list[Any]:
        if not self._assigned:  # the topic may not exist yet (dead letters, delay tiers)
            found = self._consumer.list_topics(self._topic, timeout=5).topics.get(self._topic)
            if found is None or found.error is not None or not found.partitions:
                return self.records
            self._consumer.assign([TopicPartition(self._topic, p, 0) for p in found.partitions])
            self._assigned = True
        for _ in range(20):  # bounded: a backlog is drained over later calls
            batch = [r for r in self._consumer.consume(500, 0.2) if r.error() is None]
            self.records.extend(batch)
            if not batch:
                break
        return self.records

    def close(self) -> None:
        self._consumer.close()


class Effects:
    """Writes one record per finished run to a topic and waits for its acknowledgement."""

    ENV = "EFFECTS_TOPIC"
    """Names the effects topic for `from_env` (with KAFKA_BOOTSTRAP_SERVERS)."""

    def __init__(self, broker: BrokerInfo, topic: str) -> None:
        self.topic = topic
        self._producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})

    @classmethod
    def from_env(cls) -> Effects:
        """The writer a child process builds from the environment the test set."""
        return cls(BrokerInfo(os.environ["KAFKA_BOOTSTRAP_SERVERS"], None), os.environ[cls.ENV])

    def write(self, label: str, **fields: object) -> None:
        value = json.dumps({"label": label, "at": time.time(), **fields}).encode()
        self._producer.produce(self.topic, value, partition=0)
        assert self._producer.flush(30) == 0, "effect not acknowledged"


def effects_of(records: list[Any]) -> list[dict[str, Any]]:
    """The decoded effects of records read from an effects topic."""
    return [json.loads(r.value()) for r in records]
