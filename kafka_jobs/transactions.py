"""Transactions inside a job: produce records and mark the job's record consumed atomically.

    from kafka_jobs import current_job, transaction

    @kafka_job(topic="orders")
    def settle(order_id: int) -> None:
        with transaction() as txn:
            txn.produce("ledger", b"...", key=str(order_id).encode())
            invoice.delay(order_id)          # jobs enqueued here join the transaction

On a topic without virtual partitions, the record's offset is part of the
transaction: the output and the "consumed" mark commit together or not at all.
With virtual partitions the committed offset is the lowest unfinished record of
the partition, which one lane cannot promise inside its own transaction, so the
offset is marked right after the transaction commits instead: a crash between
the two runs the job again (its output is then written twice). Each worker
thread has its own transactional producer (`transactional.id` =
`<group>-<host>-<pid>-<thread>`); consumers of the output should read with
`isolation.level=read_committed`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from kafka_jobs.context import current_job
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.wire import Headers

if TYPE_CHECKING:
    from kafka_jobs.settings import Settings

_active: ContextVar[Transaction | None] = ContextVar("kafka_jobs_transaction", default=None)
_producers = threading.local()


class Transaction:
    """The open transaction of the running job (see `transaction()`)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Write a record as part of the transaction."""
        self.producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)


def active_transaction() -> Transaction | None:
    """The transaction open on this thread, if any (`.delay()` joins it)."""
    return _active.get()


def _producer_for_thread(settings: Settings, timeout: float) -> Producer:
    producer: Producer | None = getattr(_producers, "producer", None)
    if producer is None or getattr(_producers, "pid", None) != os.getpid():
        config = dict(settings.producer_settings())
        config["transactional.id"] = (
            f"{settings.group_id}-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        )
        producer = Producer(config)
        producer.init_transactions(timeout)
        _producers.producer, _producers.pid = producer, os.getpid()
    return producer


@contextmanager
def transaction(timeout: float = 30.0) -> Iterator[Transaction]:
    """Open a Kafka transaction for the running job; commit on exit, abort on an exception."""
    context = current_job()
    if _in_event_loop():
        # One transactional producer per thread, and async jobs share the loop's thread:
        # interleaved jobs would write into each other's transactions.
        raise KafkaJobsError("transaction() is not available in async jobs; use a sync job")
    if _active.get() is not None:
        raise KafkaJobsError("transactions do not nest")
    if context.settings is None:
        raise KafkaJobsError("transaction() needs a job run by a kafka-jobs worker")
    producer = _producer_for_thread(context.settings, timeout)
    producer.begin_transaction()
    txn = Transaction(producer)
    token = _active.set(txn)
    try:
        yield txn
        metadata = context.group_metadata
        if metadata is not None:  # no virtual partitions: the offset commits with the output
            offset = TopicPartition(context.topic, context.partition, context.offset + 1)
            producer.send_offsets_to_transaction([offset], metadata, timeout)
        producer.commit_transaction(timeout)
    except BaseException:
        producer.abort_transaction(timeout)
        raise
    finally:
        _active.reset(token)


@contextmanager
def writing_through(producer: Producer) -> Iterator[Transaction]:
    """Make `.delay()` on this thread write through `producer` (outside any job).

    The caller runs the producer's transaction, if any (the recurring-jobs leader).
    """
    txn = Transaction(producer)
    token = _active.set(txn)
    try:
        yield txn
    finally:
        _active.reset(token)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
