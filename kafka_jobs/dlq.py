"""Reading and replaying dead-letter topics (behind `kafka-jobs dlq ...`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaError

from kafka_jobs.app import App
from kafka_jobs.connection.client import Client
from kafka_jobs.deadletter import H_REPLAYED, DeadLetter, is_replay_marker
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.wire import H_REPLAYED_FROM, Headers, header_map


@dataclass(frozen=True, slots=True)
class DeadLetterTopic:
    """Everything read from a dead-letter topic: the letters and which were replayed."""

    letters: list[DeadLetter]
    replayed: set[tuple[int, int]]

    def pending(self) -> list[DeadLetter]:
        """Dead letters not replayed yet."""
        return [d for d in self.letters if (d.partition, d.offset) not in self.replayed]


def read(
    app: App,
    topic: str,
    idle: float = 2.0,
    timeout: float = 120.0,
    max_records: int | None = None,
) -> DeadLetterTopic:
    """Read a dead-letter topic from the beginning until nothing new came for `idle` seconds.

    Counts records instead of trusting end offsets (some brokers report them wrong).
    `max_records` stops after about that many records (letters and markers, oldest
    first; checked per fetched batch of up to 500).
    """
    consumer = Client(
        {
            **app.settings.consumer_settings(f"kafka-jobs-dlq-reader-{uuid.uuid4().hex}"),
            "enable.partition.eof": False,
        }
    )
    try:
        partitions = consumer.partitions_of(topic)
        if partitions is None:
            raise KafkaJobsError(f"dead-letter topic {topic!r} does not exist")
        consumer.assign({(topic, p): OFFSET_BEGINNING for p in partitions})
        letters: list[DeadLetter] = []
        replayed: set[tuple[int, int]] = set()
        deadline = time.monotonic() + timeout
        last_seen = time.monotonic()
        seen = 0
        while time.monotonic() - last_seen < idle and time.monotonic() < deadline:
            if max_records is not None and seen >= max_records:
                break
            for record in consumer.poll(500, 0.2):
                error = record.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaJobsError(f"reading {topic}: {error}")
                    continue
                last_seen = time.monotonic()
                seen += 1
                raw = record.headers() or []
                headers = header_map(raw)
                if is_replay_marker(headers):
                    partition, _, offset = (headers[H_REPLAYED] or b"").decode().partition(":")
                    replayed.add((int(partition), int(offset)))
                    continue
                letters.append(
                    DeadLetter(
                        topic=topic,
                        partition=int(record.partition() or 0),
                        offset=int(record.offset() or 0),
                        key=record.key(),
                        value=record.value(),
                        headers=list(raw),  # type: ignore[arg-type]
                        timestamp_ms=record.timestamp()[1],
                    )
                )
        letters.sort(key=lambda d: (d.partition, d.offset))
        return DeadLetterTopic(letters, replayed)
    finally:
        consumer.close()


def replay(
    app: App,
    topic: str,
    task: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    only: Collection[tuple[int, int]] | None = None,
) -> list[DeadLetter]:
    """Re-enqueue pending dead letters to their original topics, then mark them replayed.

    task / limit / only: replay just the letters of this task, the first `limit`,
    those at these (partition, offset) places.
    Attempts restart at 1. A marker per record in the dead-letter topic makes a
    second replay skip it; a crash between the two writes can replay a record twice.
    """
    chosen = [
        d
        for d in read(app, topic).pending()
        if (task is None or d.task == task) and (only is None or (d.partition, d.offset) in only)
    ]
    if limit is not None:
        chosen = chosen[:limit]
    producer = app.producer
    for done, letter in enumerate(chosen, 1):
        original = letter.info.get("topic")
        if not original:
            raise KafkaJobsError(
                f"{topic}[{letter.partition}]@{letter.offset} names no original topic"
            )
        headers = [
            *letter.original_headers(),
            (H_REPLAYED_FROM, f"{topic}/{letter.partition}/{letter.offset}".encode()),
        ]
        producer.enqueue(original, "", letter.value, letter.key, headers)
        if progress:
            progress(done, len(chosen))
    app.flush()  # the jobs are back before any marker says so
    for letter in chosen:
        marker: Headers = [(H_REPLAYED, f"{letter.partition}:{letter.offset}".encode())]
        producer.client.produce(topic, None, letter.key, partition=letter.partition, headers=marker)
    app.flush()
    return chosen
