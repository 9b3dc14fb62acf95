"""Dead letters: a record a Celery worker cannot use goes to its queue's dead-letter topic.

Rejected messages (``reject(requeue=False)``), records this transport did not write,
and bodies that cannot be decoded are written there with the same error headers as
the worker's dead letters (``kafka-jobs dlq`` reads both); the record's offset is
acked once the dead letter is written. Without a dead-letter topic (or for a
broadcast reader, which commits nothing) the record is dropped with a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from celery_bridge.fetched import Record
from celery_bridge.fetcher import Fetcher
from celery_bridge.options import BridgeOptions
from celery_bridge.topics import TopicCreator
from kafka_jobs import deadletter
from kafka_jobs.producer import JobProducer
from kafka_jobs.wire import H_TASK

# The transport's logger, as before the module was split out: log configuration keeps working.
log = logging.getLogger("celery_bridge.transport")

REASON_REJECTED = "rejected"
REASON_NOT_KOMBU = "not-a-kombu-message"
REASON_NOT_DECODABLE = "not-decodable"
# A dead letter the broker did not take is written again after this many seconds
# (doubling up to the cap) while its partition stays assigned: its offset stays unacked.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


class Rejected(Exception):
    """The consumer rejected the message without requeue (``reject(requeue=False)``)."""


class DeadLetterWriter:
    """Writes records to the dead-letter topic of their queue, through the shared producer.

    The dead letter itself is built and produced by `kafka_jobs.deadletter.Writer`,
    as the worker's are; this adds the Celery task name header and acks the record
    from the delivery report.
    """

    def __init__(self, options: BridgeOptions, topics: TopicCreator, producer: JobProducer) -> None:
        self._options = options
        self._topics = topics
        self._producer = producer
        self._letters = deadletter.Writer(options.group_id)

    def write(
        self, fetcher: Fetcher, record: Record, queue: str, reason: str, error: BaseException
    ) -> None:
        """Write `record` to the queue's dead-letter topic; its offset is done once written."""
        options = self._options
        topic = options.dead_letter_topic_of(queue) if fetcher.grouped else None
        if topic is None:
            log.error(
                "dropped %s[%d]@%d of queue %s (%s: %s)",
                record.topic,
                record.partition,
                record.offset,
                queue,
                reason,
                error,
            )
            fetcher.ack(record)
            return
        self._topics.ensure(topic, options.topic_partitions, options.replication_factor)
        now = int(time.time() * 1000)
        failed = deadletter.FailedRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            reason=reason,
            error=error,
            attempts=0 if reason == REASON_NOT_KOMBU else 1,
            first_failed_ms=now,
            last_failed_ms=now,
        )
        task = dict(record.headers).get("task")
        # so `kafka-jobs dlq list` names the Celery task
        extra = [(H_TASK, task.strip(b'"'))] if task else []

        def send(wait: float) -> None:
            def written(err: KafkaError | None, _msg: KafkaMessage) -> None:
                if err is None:
                    fetcher.ack(record)
                    return
                log.error(
                    "dead letter of %s[%d]@%d not written (%s): trying again in %.0fs",
                    record.topic,
                    record.partition,
                    record.offset,
                    err,
                    wait,
                )
                self._later(wait, lambda: again(min(wait * 2, RETRY_MAX)))

            if fetcher.owns(record):  # else its partition's next owner deals with it
                self._letters.produce(self._producer, topic, failed, written, extra=extra)

        def again(wait: float) -> None:
            try:
                send(wait)
            except Exception as exc:  # the producer refused it: later again
                log.error("dead letter of %s@%d: %s", record.topic, record.offset, exc)
                self._later(wait, lambda: again(min(wait * 2, RETRY_MAX)))

        log.warning(
            "dead-lettered %s[%d]@%d of queue %s to %s (%s: %s)",
            record.topic,
            record.partition,
            record.offset,
            queue,
            topic,
            reason,
            error,
        )
        send(RETRY_FIRST)

    @staticmethod
    def _later(wait: float, call: Callable[[], None]) -> None:
        timer = threading.Timer(wait, call)
        timer.daemon = True
        timer.start()
