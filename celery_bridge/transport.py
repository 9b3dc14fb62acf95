"""The kombu transport: Celery's broker on Kafka.

Mapping (see the README section "switching a Celery project to Kafka"):

* a durable queue is a topic of the same name (created on declare), consumed under
  one consumer group (``group_id``) shared by every worker, so workers split the
  partitions between them;
* a transient queue (``auto_delete`` or ``exclusive``: Celery's remote-control
  queues, reply queues, event receivers) reads the topic of the exchange it is bound
  to, from the moment it is bound, without a group: every such queue sees every
  record published after it, filtered by its binding. This is how broadcast
  (``celery inspect``, remote control) reaches every worker;
* a publish goes to the topics of the queues its exchange routes it to in this
  connection's bindings; to transient queues, and when no binding is known here,
  it goes to the exchange's topic.

Acks mark the record in a lowest-contiguous offset tracker: offsets are committed
only below messages that are all acked, so a crash redelivers whatever was not.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from queue import Empty
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kombu.transport import virtual

from celery_bridge.fetcher import Fetcher, FetcherFailed, Record
from celery_bridge.options import BridgeOptions, hosts_of
from celery_bridge.records import NotAKombuMessage, from_record, to_record
from celery_bridge.topics import TopicCreator, TopicsUnavailable, topic_name
from kafka_jobs import deadletter
from kafka_jobs.errors import DeliveryError, EnqueueError
from kafka_jobs.producer import JobProducer
from kafka_jobs.wire import H_TASK

log = logging.getLogger(__name__)

# Records held for a transient queue that is bound but not consumed yet.
_HELD_LIMIT = 1000

REASON_REJECTED = "rejected"
REASON_NOT_KOMBU = "not-a-kombu-message"
REASON_NOT_DECODABLE = "not-decodable"


class Rejected(Exception):
    """The consumer rejected the message without requeue (``reject(requeue=False)``)."""


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at connect."""


class Message(virtual.Message):  # type: ignore[misc]
    """A kombu message that remembers the record it came from."""

    def __init__(self, payload: dict[str, Any], channel: Channel | None = None, **kw: Any) -> None:
        super().__init__(payload, channel=channel, **kw)
        self.source: tuple[Fetcher, Record, str] | None = payload.get("_kafka")
        self.decode_error: BaseException | None = None

    def decode(self) -> Any:
        """Decode the body; a failure is remembered so the ack dead-letters the record."""
        try:
            return super().decode()
        except Exception as exc:
            self.decode_error = exc
            raise


class QoS(virtual.QoS):  # type: ignore[misc]
    """Unacked messages of one channel; acks may come from any thread (pool threads)."""

    def __init__(self, channel: Channel, prefetch_count: int = 0) -> None:
        self.channel = channel
        self.prefetch_count = prefetch_count or 0
        self._lock = threading.Lock()
        self._unacked: dict[str, Message] = {}

    def can_consume(self) -> bool:
        """True while fewer messages than the prefetch count are unacked."""
        return not self.prefetch_count or len(self._unacked) < self.prefetch_count

    def can_consume_max_estimate(self) -> int | None:
        """How many more messages the prefetch count allows."""
        if self.prefetch_count:
            return max(self.prefetch_count - len(self._unacked), 0)
        return None

    def append(self, message: Message, delivery_tag: str) -> None:
        """`message` was delivered and awaits its ack."""
        with self._lock:
            self._unacked[delivery_tag] = message

    def get(self, delivery_tag: str) -> Message:
        """The unacked message of `delivery_tag`."""
        return self._unacked[delivery_tag]

    def _pop(self, delivery_tag: str) -> Message | None:
        with self._lock:
            return self._unacked.pop(delivery_tag, None)

    def ack(self, delivery_tag: str) -> None:
        """Mark the record done (committed once every record below it is)."""
        message = self._pop(delivery_tag)
        if message is None or message.source is None:
            return
        fetcher, record, queue = message.source
        if message.decode_error is not None:
            # Celery acks bodies it cannot decode (and logs them); keep them instead.
            self.channel.dead_letter(
                fetcher, record, queue, REASON_NOT_DECODABLE, message.decode_error
            )
        else:
            fetcher.ack(record)
        self._wake()

    def _wake(self) -> None:
        transport = self.channel.connection
        if transport is not None:  # acks from pool threads may come after the channel closed
            transport.wake()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue: deliver again from this worker. Otherwise: to the dead-letter topic."""
        message = self._pop(delivery_tag)
        if message is None or message.source is None:
            return
        fetcher, record, queue = message.source
        if requeue:
            fetcher.requeue(record)
        else:
            self.channel.dead_letter(fetcher, record, queue, REASON_REJECTED, Rejected(queue))
        self._wake()

    def restore_unacked(self) -> list[Any]:
        """Forget unacked messages: their offsets were not committed, Kafka redelivers them."""
        with self._lock:
            self._unacked.clear()
        return []

    def restore_unacked_once(self, stderr: Any = None) -> None:
        """As `restore_unacked` (called when the channel closes)."""
        self.restore_unacked()

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: there is no visibility timeout."""


class Channel(virtual.Channel):  # type: ignore[misc]
    """One kombu channel: publishes through the process's producer, consumes through fetchers."""

    Message = Message
    QoS = QoS
    do_restore = False
    body_encoding = None
    from_transport_options = ()

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.options: BridgeOptions = connection.options
        # Kept after close(): acks from pool threads may dead-letter after the channel closed.
        self._transport = connection
        self._tags = itertools.count(1)
        self._group: Fetcher | None = None
        self._reader: Fetcher | None = None
        self._topic_queues: dict[str, str] = {}  # consumed durable queues by topic
        self._no_ack: set[str] = set()
        self._bound_readers: dict[str, set[str]] = {}  # transient queue -> exchange topics
        self._held: dict[str, deque[tuple[dict[str, Any], str]]] = {}
        self._ready: deque[tuple[dict[str, Any], str]] = deque()
        self._turn = 0

    # --- declaring --------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        if kwargs.get("auto_delete") or kwargs.get("exclusive"):
            self.connection.transient.add(queue)
            return
        self._transport.topics.ensure(
            topic_name(queue), self.options.topic_partitions, self.options.replication_factor
        )

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        if queue in self.connection.transient:
            return True
        try:
            admin = AdminClient(self.options.admin_settings())
            timeout = self.options.connect_timeout
            return topic_name(queue) in admin.list_topics(timeout=timeout).topics
        except KafkaException:
            return False

    def queue_bind(
        self, queue: str, exchange: str | None = None, routing_key: str = "", **kwargs: Any
    ) -> None:
        """Bind as AMQP does; a transient queue starts reading its exchange's topic now."""
        super().queue_bind(queue, exchange, routing_key, **kwargs)
        if queue in self.connection.transient:
            topic = self._exchange_topic(exchange or "amq.direct")
            self._held.setdefault(queue, deque(maxlen=_HELD_LIMIT))
            topics = self._bound_readers.setdefault(queue, set())
            if topic not in topics:
                self._reader_fetcher().attach(topic)
                topics.add(topic)

    def _size(self, queue: str) -> int:
        return 0  # not known without reading offsets; see the README's differences

    def _purge(self, queue: str) -> int:
        log.warning(
            "purge of %s is not supported on Kafka; reset the group's offsets instead", queue
        )
        return 0

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        # Topics are never deleted: they may hold other workers' unfinished messages.
        self._held.pop(queue, None)
        self._bound_readers.pop(queue, None)

    # --- publishing -------------------------------------------------------------

    def _exchange_topic(self, exchange: str) -> str:
        topic = topic_name(exchange)
        # Broadcasts and replies matter only to receivers listening now: keep them briefly.
        retention = {"retention.ms": str(int(self.options.broadcast_retention * 1000))}
        self._transport.topics.ensure(topic, 1, self.options.replication_factor, retention)
        return topic

    def destinations(self, exchange: str, routing_key: str) -> set[str]:
        """The topics a publish to (`exchange`, `routing_key`) writes to."""
        if not exchange:  # the default exchange: the routing key names the queue
            return {topic_name(routing_key)}
        try:
            queues = self.typeof(exchange).lookup(
                self.get_table(exchange), exchange, routing_key, None
            )
        except KeyError:
            queues = []
        transient = self.connection.transient
        topics = {topic_name(q) for q in queues if q not in transient}
        if len(topics) < len(queues) or not topics:
            topics.add(self._exchange_topic(exchange))
        return topics

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        """Write one record per destination topic; raise for earlier failed deliveries."""
        producer = self._transport.producer
        producer.check()
        value, key, headers = to_record(message, exchange, routing_key)
        if len(value) > self.options.max_message_bytes:
            raise EnqueueError(
                f"message of {len(value)} bytes exceeds max_message_bytes "
                f"({self.options.max_message_bytes})"
            )
        # Unique per record: the same task id may be published again (retries, fanout).
        ident = f"{(message.get('headers') or {}).get('id') or 'message'}#{next(_publishes)}"
        handles = [
            producer.enqueue(topic, ident, value, key, headers)
            for topic in self.destinations(exchange, routing_key)
        ]
        if self.options.confirm_publish:
            for handle in handles:
                handle.wait(self.options.delivery_timeout)

    # --- consuming --------------------------------------------------------------

    def _group_fetcher(self) -> Fetcher:
        if self._group is None:
            self._group = self.connection.new_fetcher(self.options.group_id)
        return self._group

    def _reader_fetcher(self) -> Fetcher:
        if self._reader is None:
            self._reader = self.connection.new_fetcher(None)
        return self._reader

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> None:
        """Start delivering `queue`'s messages to `callback`."""
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if no_ack:
            self._no_ack.add(queue)
        if queue in self.connection.transient:
            self._ready.extend(self._held.get(queue, ()))
            self._held.get(queue, deque()).clear()
            return
        self._topic_queues[topic_name(queue)] = queue
        fetcher = self._group_fetcher()
        fetcher.ensure_capacity(self.qos.prefetch_count)
        fetcher.subscribe(self._topic_queues)

    def basic_cancel(self, consumer_tag: str) -> None:
        """Stop delivering the consumer's queue."""
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is None or queue in self._active_queues:
            return
        self._no_ack.discard(queue)
        if self._topic_queues.pop(topic_name(queue), None) is not None and self._group:
            self._group.subscribe(self._topic_queues)

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False
    ) -> None:
        """Set the prefetch count (and fetch at least that many ahead)."""
        super().basic_qos(prefetch_size, prefetch_count, apply_global)
        if self._group is not None:
            self._group.ensure_capacity(prefetch_count)

    def drain_events(self, timeout: float | None = None, callback: Any = None) -> None:
        """Deliver one message to its consumer, or raise `Empty`."""
        if not self._consumers or not self.qos.can_consume():
            raise Empty()
        item = self._next()
        if item is None:
            raise Empty()
        payload, queue = item
        (callback or self.connection._deliver)(payload, queue)

    def _next(self) -> tuple[dict[str, Any], str] | None:
        while self._ready:
            payload, queue = self._ready.popleft()
            if queue in self._active_queues:
                return payload, queue
        fetchers = [f for f in (self._group, self._reader) if f is not None]
        self._turn += 1  # alternate, so broadcasts are not starved by a backlog
        for fetcher in fetchers[self._turn % 2 :] + fetchers[: self._turn % 2]:
            while (record := fetcher.take()) is not None:
                for delivery in self._route(fetcher, record):
                    self._ready.append(delivery)
                if self._ready:
                    return self._ready.popleft()
        return None

    def _route(self, fetcher: Fetcher, record: Record) -> Iterator[tuple[dict[str, Any], str]]:
        if fetcher.grouped:
            queue = self._topic_queues.get(record.topic)
            if queue is None:
                return  # consumer cancelled: the partitions are being revoked
            try:
                payload = from_record(record.value, record.headers)
            except NotAKombuMessage as exc:
                self.dead_letter(fetcher, record, queue, REASON_NOT_KOMBU, exc)
                return
            yield self._delivery(payload, fetcher, record, queue)
            return
        try:
            payload = from_record(record.value, record.headers)
        except NotAKombuMessage:
            return  # a broadcast topic written by someone else: not for us
        info = payload["properties"]["delivery_info"]
        for queue, topics in self._bound_readers.items():
            if record.topic in topics and self._binds(queue, info["exchange"], info["routing_key"]):
                copy = {**payload, "properties": {**payload["properties"]}}
                delivery = self._delivery(copy, fetcher, record, queue)
                if queue in self._active_queues:
                    yield delivery
                else:
                    self._held[queue].append(delivery)

    def _binds(self, queue: str, exchange: str, routing_key: str) -> bool:
        for bound_exchange, binding_key, arguments in self.state.queue_bindings(queue):
            if bound_exchange != exchange:
                continue
            kind = self.typeof(exchange)
            table = [kind.prepare_bind(queue, exchange, binding_key, arguments)]
            if kind.lookup(table, exchange, routing_key, None):
                return True
        return False

    def _delivery(
        self, payload: dict[str, Any], fetcher: Fetcher, record: Record, queue: str
    ) -> tuple[dict[str, Any], str]:
        properties = payload["properties"]
        properties["delivery_tag"] = f"{self.channel_id}.{next(self._tags)}"
        properties["delivery_info"]["redelivered"] = record.redelivered  # where Celery looks
        payload["_kafka"] = (fetcher, record, queue)
        if queue in self._no_ack:
            fetcher.ack(record)  # consumed without acks: done once handed over
        return payload, queue

    # --- dead letters -------------------------------------------------------------

    def dead_letter(
        self, fetcher: Fetcher, record: Record, queue: str, reason: str, error: BaseException
    ) -> None:
        """Write `record` to the queue's dead-letter topic; its offset is done once written."""
        topic = self.options.dead_letter_topic_of(queue) if fetcher.grouped else None
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
        self._transport.topics.ensure(
            topic, self.options.topic_partitions, self.options.replication_factor
        )
        now = int(time.time() * 1000)
        headers = deadletter.error_headers(
            error=error,
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            group=self.options.group_id,
            attempts=0 if reason == REASON_NOT_KOMBU else 1,
            first_failed_ms=now,
            last_failed_ms=now,
            original=record.headers,
        )
        task = dict(record.headers).get("task")
        if task:  # so `kafka-jobs dlq list` names the Celery task
            headers.append((H_TASK, task.strip(b'"')))

        def written(err: Any, _msg: Any) -> None:
            if err is None:
                fetcher.ack(record)
            else:  # left unacked: redelivered after a restart or rebalance
                log.error("dead letter of %s@%d not written: %s", record.topic, record.offset, err)

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
        self._transport.producer.produce(topic, record.value, record.key, headers, written)

    def close(self) -> None:
        """Commit what is acked, leave the group, stop the polling threads."""
        fetchers = [f for f in (self._group, self._reader) if f is not None]
        self._group = self._reader = None
        transport = self.connection
        super().close()  # detaches the channel from its transport
        for fetcher in fetchers:
            fetcher.close()
            if transport is not None:
                transport.forget_fetcher(fetcher)


_publishes = itertools.count(1)
_producers: dict[tuple[tuple[str, str], ...], JobProducer] = {}
_creators: dict[tuple[tuple[str, str], ...], TopicCreator] = {}
_shared_lock = threading.Lock()


def _config_key(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in config.items()))


class Transport(virtual.Transport):  # type: ignore[misc]
    """kombu transport ``kafkajobs://host:9092`` (failover hosts: ``;kafkajobs://host2:9092``)."""

    Channel = Channel
    Message = Message
    driver_type = "kafka"
    driver_name = "confluent-kafka"
    default_port = 9092
    polling_interval = None
    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )
    # Celery rebuilds the connection on these (and only these): every Kafka client error
    # counts, as does a topic that cannot be listed or created.
    connection_errors = (
        *virtual.Transport.connection_errors,
        BrokerUnreachable,
        FetcherFailed,
        TopicsUnavailable,
        KafkaException,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        hosts = hosts_of(client.hostname, client.port, list(client.alt or []))
        self.options = BridgeOptions.from_transport_options(client.transport_options, hosts)
        producer_conf = self.options.producer_settings()
        admin_conf = self.options.admin_settings()
        with _shared_lock:  # one producer and one topic cache per configuration
            self.producer = _producers.setdefault(
                _config_key(producer_conf),
                JobProducer(producer_conf, self.options.delivery_timeout),
            )
            self.topics = _creators.setdefault(_config_key(admin_conf), TopicCreator(admin_conf))
        self.transient: set[str] = set()
        self._fetchers: list[Fetcher] = []
        self._ready = threading.Event()

    def establish_connection(self) -> Transport:
        """Check that a broker answers, then hand out the first channel."""
        try:
            admin = AdminClient(self.options.admin_settings())
            admin.list_topics(timeout=self.options.connect_timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(
                f"no Kafka broker at {self.options.bootstrap_servers}: {exc}"
            ) from exc
        result: Transport = super().establish_connection()
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
        )
        self._fetchers.append(fetcher)
        return fetcher

    def forget_fetcher(self, fetcher: Fetcher) -> None:
        """`fetcher` was closed with its channel."""
        if fetcher in self._fetchers:
            self._fetchers.remove(fetcher)

    def wake(self) -> None:
        """Something may be deliverable: wake `drain_events`."""
        self._ready.set()

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message; wait (without polling Kafka here) up to `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._ready.clear()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            for fetcher in self._fetchers:
                fetcher.raise_failure()
            # Serve delivery reports: dead letters are acked from theirs, and a worker
            # may publish nothing else for a long time.
            self.producer.poll(0)
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self._ready.wait(min(left, 1.0))

    def close_connection(self, connection: Any) -> None:
        """Deliver what was published (dead letters ack their records), then close channels."""
        try:
            self.producer.flush(self.options.delivery_timeout)
        except DeliveryError as exc:
            log.error("messages published by this process were not delivered: %s", exc)
        super().close_connection(connection)

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """Defaults kombu fills into the URL."""
        return {"port": self.default_port, "hostname": None}
