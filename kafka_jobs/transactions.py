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

`continuation()` is the same transaction opened by the worker after a job
returned: with `canvas_transactions` on, a chain's next step (a chord member's
join) and the finished record's offset commit together (`kafka_jobs.canvas.worker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from kafka_jobs.context import JobContext, current_job
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.wire import Headers

if TYPE_CHECKING:
    from kafka_jobs.settings import ClientConfig, Settings

log = logging.getLogger(__name__)

_active: ContextVar[Transaction | None] = ContextVar("kafka_jobs_transaction", default=None)
_producers = threading.local()
_support_lock = threading.Lock()
_supported: bool | None = None  # None: not tried yet in this process; see `continuation`


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


def transactional_config(settings: Settings, transactional_id: str) -> ClientConfig:
    """The producer settings with `transactional_id`.

    librdkafka refuses a transactional producer whose deliveries may outlive its
    transactions, so a `transaction.timeout.ms` shorter than `delivery_timeout`
    bounds the deliveries of this producer too.
    """
    config = dict(settings.producer_settings())
    config["transactional.id"] = transactional_id
    limit = config.get("transaction.timeout.ms")
    delivery = config.get("message.timeout.ms")
    if limit is not None and delivery is not None and float(str(delivery)) > float(str(limit)):
        config["message.timeout.ms"] = limit
    return config


def _producer_for_thread(settings: Settings, timeout: float) -> Producer:
    producer: Producer | None = getattr(_producers, "producer", None)
    if producer is None or getattr(_producers, "pid", None) != os.getpid():
        name = f"{settings.group_id}-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        producer = Producer(transactional_config(settings, name))
        producer.init_transactions(timeout)
        _producers.producer, _producers.pid = producer, os.getpid()
    return producer


def _drop_thread_producer() -> None:
    """Forget this thread's producer after a fatal error (fenced): the next use makes another."""
    _producers.producer = None


class _PartitionProducers:
    """Transactional producers of continuations, one per consumed partition. Thread-safe.

    The `transactional.id` is `<group>.canvas.<topic>.<partition>`: whoever owns the
    partition next (this process or another, after a kill -9) uses the same id, so
    its `init_transactions` ends a dead owner's open transaction at once and fences
    a live one (a former owner's commit then fails). Brokers that never expire an
    open transaction (the embedded one) would otherwise keep read_committed readers
    of what it wrote waiting for ever. A partition's records run one at a time, so
    a producer is taken out while in use; at most `keep` idle ones stay open.
    """

    def __init__(self, keep: int = 16) -> None:
        self._keep = keep
        self._idle: OrderedDict[tuple[str, str, int], Producer] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, settings: Settings, topic: str, partition: int, timeout: float) -> Producer:
        key = (settings.group_id, topic, partition)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's clients are unusable
                self._idle.clear()
                self._pid = os.getpid()
            producer = self._idle.pop(key, None)
        if producer is None:
            name = f"{settings.group_id}.canvas.{topic}.{partition}"
            producer = Producer(transactional_config(settings, name))
            producer.init_transactions(timeout)
        return producer

    def give_back(self, settings: Settings, topic: str, partition: int, producer: Producer) -> None:
        with self._lock:
            self._idle[(settings.group_id, topic, partition)] = producer
            while len(self._idle) > self._keep:
                self._idle.popitem(last=False)  # no transaction open: dropping it is enough

    def release(self) -> None:
        """Drop the idle producers (a worker stopped); the next use makes them again."""
        with self._lock:
            self._idle.clear()


_partition_producers = _PartitionProducers()


def _commit(producer: Producer, timeout: float) -> None:
    producer.commit_transaction(timeout)


def _abort(producer: Producer, timeout: float) -> bool:
    """Abort the open transaction; False when the producer cannot be used any more."""
    try:
        producer.abort_transaction(timeout)
    except KafkaException as error:
        log.warning("aborting a transaction failed (%s): a new producer is made", error)
        return False
    return True


@contextmanager
def _open(
    producer: Producer,
    offset: TopicPartition | None,
    metadata: object | None,
    timeout: float,
    drop: Callable[[], None],
) -> Iterator[Transaction]:
    """One transaction on `producer`, `.delay()` joining it; `offset` commits with it.

    `drop` is called when the producer cannot be used again (fenced, or not aborted).
    """
    producer.begin_transaction()
    txn = Transaction(producer)
    token = _active.set(txn)
    try:
        yield txn
        if offset is not None and metadata is not None:
            producer.send_offsets_to_transaction([offset], metadata, timeout)
        _commit(producer, timeout)
    except BaseException as error:
        kafka_error = error.args[0] if isinstance(error, KafkaException) and error.args else None
        fatal = isinstance(kafka_error, KafkaError) and kafka_error.fatal()
        if fatal or not _abort(producer, timeout):  # fenced or broken: nothing to abort with
            drop()
        raise
    finally:
        _active.reset(token)


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
    # Without group metadata (virtual partitions) the offset is marked after the commit.
    offset, metadata = _next_offset(context), context.group_metadata
    with _open(producer, offset, metadata, timeout, _drop_thread_producer) as txn:
        yield txn


def continuation(context: JobContext, timeout: float) -> AbstractContextManager[Transaction] | None:
    """A transaction for what the worker writes after `context`'s job returned, or None.

    Committing it also commits the job's record as consumed: records written in
    it and the offset become visible together, or not at all. None when the
    record's offset cannot join a transaction (virtual partitions, manual
    offsets, a context built by hand) or the broker refused transactions: the
    caller then writes as without transactions. Whether the broker accepts them
    is found out by trying (`init_transactions`) once per process, never assumed
    from its name. The producer is the partition's (see `_PartitionProducers`).
    """
    settings, metadata = context.settings, context.group_metadata
    if settings is None or metadata is None or _supported is False:
        return None
    try:
        producer = _partition_producers.take(settings, context.topic, context.partition, timeout)
    except KafkaException as refusal:
        if _supported:  # they worked in this process: a passing failure, the job is retried
            raise
        _refused(refusal)
        return None
    _note_supported()
    return _continuing(context, settings, producer, metadata, timeout)


@contextmanager
def _continuing(
    context: JobContext, settings: Settings, producer: Producer, metadata: object, timeout: float
) -> Iterator[Transaction]:
    kept = [True]

    def drop() -> None:
        kept[0] = False

    try:
        with _open(producer, _next_offset(context), metadata, timeout, drop) as txn:
            yield txn
    finally:
        if kept[0]:
            _partition_producers.give_back(settings, context.topic, context.partition, producer)


def _note_supported() -> None:
    global _supported
    _supported = True


def _refused(refusal: KafkaException) -> None:
    """The broker refused `init_transactions`: continuations go on without transactions."""
    global _supported
    with _support_lock:
        if _supported is None:
            log.warning(
                "the broker refused transactions (%s): canvas steps are enqueued"
                " without them (at least once, copies skipped by id)",
                refusal,
            )
            _supported = False


def release_continuations() -> None:
    """Close the idle producers of `continuation` (called when a worker stops)."""
    _partition_producers.release()


def _next_offset(context: JobContext) -> TopicPartition:
    return TopicPartition(context.topic, context.partition, context.offset + 1)


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
