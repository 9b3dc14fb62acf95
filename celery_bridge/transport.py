"""The kombu transport ``kafkajobs://``: Celery's broker connection on Kafka.

It owns what a connection shares between its channels: the process's producer and
topic creator (one per configuration), the polling consumers (fetchers) its channels
open, and the wait for something to deliver. The channel (`celery_bridge.channel`)
maps queues, exchanges and publishes onto topics; acks (`celery_bridge.acks`) mark
records in a lowest-contiguous offset tracker, so offsets are committed only below
messages that are all acked and a crash redelivers whatever was not.

kombu loads this module by its path: ``celery_bridge.transport:Transport``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from queue import Empty
from typing import Any, Protocol, cast

from confluent_kafka import KafkaException
from kombu.connection import Connection
from kombu.transport import virtual

from celery_bridge import feeding, revoking
from celery_bridge.acks import Message, Payload, QoS
from celery_bridge.channel import Channel
from celery_bridge.dead_letters import (
    REASON_NOT_DECODABLE,
    REASON_NOT_KOMBU,
    REASON_REJECTED,
    Rejected,
)
from celery_bridge.dispatching import DispatcherFailed, ProcessDispatcher, acquire, release
from celery_bridge.fetched import FetcherFailed
from celery_bridge.fetcher import Fetcher
from celery_bridge.options import BridgeOptions, hosts_of
from celery_bridge.purges import PurgeMarks
from celery_bridge.topics import TopicCreator, TopicsUnavailable
from kafka_jobs.connection.admin import admin_client
from kafka_jobs.errors import DeliveryError
from kafka_jobs.producer import JobProducer
from kafka_jobs.settings import config_key

log = logging.getLogger(__name__)

__all__ = [
    "REASON_NOT_DECODABLE",
    "REASON_NOT_KOMBU",
    "REASON_REJECTED",
    "BrokerUnreachable",
    "Channel",
    "Message",
    "QoS",
    "Rejected",
    "Transport",
]


# How long `Transport.settle` may hold a reply (Celery waits 1 s for replies by default).
SETTLE_TIMEOUT = 0.75


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at connect."""


_producers: dict[tuple[tuple[str, str], ...], JobProducer] = {}
_creators: dict[tuple[tuple[str, str], ...], TopicCreator] = {}
_shared_lock = threading.Lock()


class _Cycle(Protocol):
    """A typed view of kombu's (unannotated) FairCycle over the transport's channels."""

    def get(self, callback: Callable[[Payload, str], None], timeout: float | None = None) -> None:
        """Drain one channel that has something for `callback`, or raise `Empty`."""


class Transport(virtual.Transport):
    """kombu transport ``kafkajobs://host:9092`` (failover hosts: ``;kafkajobs://host2:9092``)."""

    Channel = Channel
    Message = Message
    driver_type = "kafka"
    driver_name = "confluent-kafka"
    default_port = 9092  # type: ignore[assignment]  # kombu infers None from its default
    polling_interval = None  # type: ignore[assignment]  # kombu infers float: we never poll
    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )
    # Celery rebuilds the connection on these (and only these): every Kafka client error
    # counts, as does a topic that cannot be listed or created.
    connection_errors = (  # type: ignore[assignment]  # kombu infers a 1-tuple
        *virtual.Transport.connection_errors,
        BrokerUnreachable,
        DispatcherFailed,
        FetcherFailed,
        TopicsUnavailable,
        KafkaException,
    )

    def __init__(self, client: Connection, **kwargs: Any) -> None:
        # kombu's virtual.Transport.__init__ is unannotated.
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        hosts = hosts_of(client.hostname, client.port, list(client.alt or []))
        # kombu's Connection sets it to a dict (possibly empty) in its __init__.
        transport_options = cast(Mapping[str, object], client.transport_options)
        self.options = BridgeOptions.from_transport_options(transport_options, hosts)
        producer_conf = self.options.producer_settings()
        admin_conf = self.options.admin_settings()
        with _shared_lock:  # one producer and one topic cache per configuration
            self.producer = _producers.setdefault(
                config_key(producer_conf),
                JobProducer(producer_conf, self.options.delivery_timeout),
            )
            self.topics = _creators.setdefault(config_key(admin_conf), TopicCreator(admin_conf))
        self.transient: set[str] = set()
        self._fetchers: list[Fetcher] = []
        self._ready = threading.Event()
        self._delays: ProcessDispatcher | None = None
        self.purges = PurgeMarks(self.options, self.topics, self.producer)

    def establish_connection(self) -> Transport:
        """Check that a broker answers, then hand out the first channel."""
        try:
            admin = admin_client(self.options.admin_settings())
            admin.list_topics(timeout=self.options.connect_timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(
                f"no Kafka broker at {self.options.bootstrap_servers}: {exc}"
            ) from exc
        # kombu's virtual.Transport.establish_connection is unannotated; it returns self.
        result: Transport = super().establish_connection()  # type: ignore[no-untyped-call]
        return result

    def new_fetcher(self, group_id: str | None) -> Fetcher:
        """A polling consumer for a channel: grouped for queues, a reader for broadcasts."""
        fetcher = Fetcher(
            self.options.consumer_settings(group_id),
            grouped=group_id is not None,
            wake=self.wake,
            buffer_size=self.options.buffer_size,
            commit_interval=self.options.commit_interval,
            poll_timeout=self.options.poll_timeout,
            name="celery-bridge-group" if group_id else "celery-bridge-reader",
            end_offsets=self.topics.end_offsets,
        )
        # Queue batches wait for the connection's broadcast readers (Fetcher.follow):
        # Celery reads remote control and tasks on separate channels of one connection.
        for other in self._fetchers:
            if fetcher.grouped and not other.grouped:
                fetcher.follow(other)
            elif other.grouped and not fetcher.grouped:
                other.follow(fetcher)
        self._fetchers.append(fetcher)
        if group_id is not None:  # skips what purges of its group discarded
            self.purges.attach(fetcher, group_id)
        return fetcher

    def start_delay_dispatcher(self) -> None:
        """Run the process's delay dispatcher while this connection lives.

        Once per connection (see `celery_bridge.dispatching`); nothing when delayed
        publishing is off (``eta_threshold`` None).
        """
        if self._delays is None and self.options.eta_threshold is not None:
            self._delays = acquire(self.options, self.producer)

    def forget_fetcher(self, fetcher: Fetcher) -> None:
        """`fetcher` was closed with its channel."""
        if fetcher in self._fetchers:
            self._fetchers.remove(fetcher)
        for other in self._fetchers:
            other.unfollow(fetcher)

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Fetch the queues up to their current ends, then hand Celery their eta tasks.

        Run before Celery answers ``inspect scheduled``: a task with an eta published
        before the command (flushed first: see `Channel.basic_publish`) is then in the
        reply, as on brokers with one connection for both. Only eta tasks go ahead of
        their turn: Celery holds them in its timer and runs nothing now, so a busy
        queue cannot delay the reply beyond `timeout`. Best effort, bounded.
        """
        deadline = time.monotonic() + timeout
        for fetcher in [f for f in self._fetchers if f.grouped]:
            try:
                ends = self.topics.end_offsets(fetcher.assigned_partitions(), timeout)
            except Exception as exc:  # best effort: the reply must go on
                log.warning("cannot read the queues' end offsets (%s); answering now", exc)
                return
            if not fetcher.settle(ends, max(0.0, deadline - time.monotonic())):
                log.debug("queues not fetched to their ends in %ss; answering now", timeout)
        # kombu's virtual.Transport keeps its open channels in `channels`.
        for channel in cast("list[Channel]", self.channels):
            channel.deliver_eta_tasks()

    def wake(self) -> None:
        """Something may be deliverable: wake `drain_events`."""
        self._ready.set()

    def deliver(self, payload: Payload, queue: str) -> None:
        """Hand `payload` to the consumer of `queue` (kombu's dispatch; requeued if none)."""
        # kombu's virtual.Transport._deliver is unannotated.
        self._deliver(payload, queue)  # type: ignore[no-untyped-call]

    # kombu's base Transport.drain_events takes **kwargs; kombu and Celery pass only timeout.
    def drain_events(  # type: ignore[override]
        self, connection: Transport, timeout: float | None = None
    ) -> None:
        """Deliver one message; wait (without polling Kafka here) up to `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # kombu's FairCycle, set by virtual.Transport.__init__ (None only at class level).
        cycle = cast(_Cycle, self.cycle)
        while True:
            self._ready.clear()
            if self._drain_broadcasts():
                return
            try:
                cycle.get(self.deliver, timeout=timeout)
                return
            except Empty:
                pass
            for fetcher in self._fetchers:
                fetcher.raise_failure()
            if self._delays is not None and self._delays.error is not None:
                raise DispatcherFailed(f"delay dispatcher failed: {self._delays.error}")
            # Serve delivery reports: dead letters are acked from theirs, and a worker
            # may publish nothing else for a long time.
            self.producer.poll(0)
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self._ready.wait(min(left, 1.0))

    def _drain_broadcasts(self) -> bool:
        """Deliver a waiting broadcast (a revoke before the task it names), if any."""
        # kombu's virtual.Transport keeps its open channels in `channels`.
        for channel in cast("list[Channel]", self.channels):
            if channel.has_broadcasts():
                try:
                    channel.drain_events(callback=self.deliver)
                    return True
                except Empty:
                    continue
        return False

    def close_connection(self, connection: Transport) -> None:
        """Deliver what was published (dead letters ack their records), then close channels."""
        try:
            self.producer.flush(self.options.delivery_timeout)
        except DeliveryError as exc:
            log.error("messages published by this process were not delivered: %s", exc)
        delays, self._delays = self._delays, None
        if delays is not None:
            release(delays)
        self.purges.close()
        # kombu's virtual.Transport.close_connection is unannotated.
        super().close_connection(connection)  # type: ignore[no-untyped-call]

    @property
    def default_connection_params(self) -> dict[str, int | None]:
        """Defaults kombu fills into the URL."""
        return {"port": self.default_port, "hostname": None}


# Prefork workers on this transport put tasks into their pool off the consumer's thread
# (Celery has no event loop here): see `celery_bridge.feeding`.
feeding.install(Transport)
# Its workers follow kafka-jobs' revocations topic: see `celery_bridge.revoking`.
revoking.install(Transport)
