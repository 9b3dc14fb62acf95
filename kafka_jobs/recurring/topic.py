"""Reading and writing a schedules topic outside the leader: the CLI and the dashboard.

`Snapshot` folds records into the newest state per schedule and the commands in
order (the leader loads the topic with it too). `read` reads a topic to its end
once; `send_command` writes one command for the leader to apply.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, Producer

from kafka_jobs.connection.client import Client
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.recurring.state import (
    OPS,
    Command,
    ScheduleState,
    command_key,
    parse_key,
)
from kafka_jobs.settings import KafkaConfig, Settings
from kafka_jobs.wire import now_ms

SCHEDULES_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000"}
"""Compacted; hourly segments, so a fast schedule's states are compacted within hours
(the active segment is never compacted) and a new leader has little to read."""


@dataclass
class Snapshot:
    """The newest state per schedule, and the commands (offset, name, command) in order."""

    states: dict[str, ScheduleState] = field(default_factory=dict)
    commands: list[tuple[int, str, Command]] = field(default_factory=list)

    def add(self, record: Message) -> None:
        """Fold one record in (malformed ones are ignored)."""
        parsed = parse_key(record.key())
        if parsed is None:
            return
        kind, name = parsed
        value = record.value()
        if kind == "state":
            state = ScheduleState.decode(value)
            if state is not None:
                self.states[name] = state
            elif value is None:  # a tombstone forgets the schedule
                self.states.pop(name, None)
            return
        command = Command.decode(value)
        if command is not None:
            self.commands.append((record.offset() or 0, name, command))

    def pending(self) -> list[tuple[int, str, Command]]:
        """Commands no state says were applied yet, oldest first."""
        return [
            (offset, name, command)
            for offset, name, command in self.commands
            if offset > self.states.get(name, ScheduleState()).command
        ]


def read(config: KafkaConfig, topic: str, timeout: float = 10.0) -> Snapshot:
    """The topic read from its beginning to its end (empty when it does not exist)."""
    snapshot = Snapshot()
    client = Client(
        {**config, "group.id": f"kafka-jobs-schedules-{uuid.uuid4().hex}",
         "enable.partition.eof": True}
    )  # fmt: skip
    try:
        if client.partitions_of(topic, timeout=timeout) is None:
            return snapshot
        low, high = client.watermarks((topic, 0), timeout=timeout)
        if high <= low:
            return snapshot
        client.assign({(topic, 0): OFFSET_BEGINNING})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = client.poll(500, 0.2)
            for record in records:
                error = record.error()
                if error is None:
                    snapshot.add(record)
                elif error.code() == KafkaError._PARTITION_EOF:
                    return snapshot
        raise KafkaJobsError(f"could not read {topic} to its end within {timeout}s")
    finally:
        client.close()


def send_command(settings: Settings, topic: str, name: str, op: str, timeout: float) -> int:
    """Write one command; returns its offset once the broker acknowledged it."""
    if op not in OPS:
        raise KafkaJobsError(f"unknown schedule command {op!r}: use one of {', '.join(OPS)}")
    command = Command(op, now_ms())
    producer = Producer(settings.producer_settings())
    outcome: list[tuple[KafkaError | None, int]] = []
    producer.produce(
        topic,
        command.encode(),
        command_key(name),
        on_delivery=lambda err, msg: outcome.append((err, msg.offset() or 0)),
    )
    producer.flush(timeout)
    if not outcome:
        raise KafkaJobsError(f"the {op} command was not acknowledged within {timeout}s")
    error, offset = outcome[0]
    if error is not None:
        raise KafkaJobsError(f"the {op} command was not written: {error}")
    return offset
