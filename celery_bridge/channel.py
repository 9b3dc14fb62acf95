"""The kombu channel: queues declared as topics, publishes as records, fetched records to queues.

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
  it goes to the exchange's topic. A task whose eta is further ahead than
  ``eta_threshold`` goes to a delay tier topic first (see `celery_bridge.eta`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from queue import Empty
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import KafkaException
from kombu.transport import virtual

from celery_bridge import acks, revoking
from celery_bridge.acks import Message, Payload, QoS
from celery_bridge.bindings import binds, routed_queues
from celery_bridge.dead_letters import REASON_NOT_KOMBU, DeadLetterWriter
from celery_bridge.dispatching import DELAY_TOPIC_PARTITIONS
from celery_bridge.eta import delay_hop
from celery_bridge.fetched import Record
from celery_bridge.fetcher import Fetcher
from celery_bridge.options import BridgeOptions
from celery_bridge.records import NotAKombuMessage, from_record, to_record
from celery_bridge.topics import topic_name
from kafka_jobs.connection.admin import admin_client
from kafka_jobs.errors import DeliveryTimeout, EnqueueError
from kafka_jobs.wire import now_ms

if TYPE_CHECKING:
    from celery_bridge.transport import Transport

# The transport's logger, as before the module was split out: log configuration keeps working.
log = logging.getLogger("celery_bridge.transport")

# Records held for a transient queue that is bound but not consumed yet.
_HELD_LIMIT = 1000

#: A message ready for delivery and the queue it goes to.
Delivery = tuple[Payload, str]

_publishes = itertools.count(1)

# Celery's remote-control exchanges: "<name>.pidbox" (commands), "reply.<name>.pidbox".
_CONTROL_SUFFIX = ".pidbox"
_REPLY_PREFIX = "reply."
# How long a remote-control publish waits for the producer to send what it holds.
CONTROL_FLUSH_TIMEOUT = 1.0


def is_control(exchange: str) -> bool:
    """Whether `exchange` carries Celery's remote control (commands or their replies)."""
    return exchange.endswith(_CONTROL_SUFFIX)


def is_command(exchange: str) -> bool:
    """Whether `exchange` carries Celery's remote-control commands (not their replies)."""
    return is_control(exchange) and not exchange.startswith(_REPLY_PREFIX)


def has_eta(record: Record) -> bool:
    """Whether a queue record is a Celery task with an eta (or countdown)."""
    return any(name == "eta" and value not in (None, b"null") for name, value in record.headers)


def reports_scheduled(payload: Payload) -> bool:
    """Whether a remote-control message is the ``scheduled`` inspect command."""
    body = payload.get("body")
    if not isinstance(body, bytes | str) or "scheduled" not in str(body)[:200]:
        return False  # cheap first: most commands are not this one
    try:
        command = json.loads(body)
    except ValueError:
        return False
    return isinstance(command, dict) and command.get("method") == "scheduled"


class Channel(virtual.Channel):
    """One kombu channel: publishes through the process's producer, consumes through fetchers."""

    Message = Message
    QoS = QoS
    do_restore = False
    # kombu infers `str` from its default ("base64"); None, no body encoding, is one it allows.
    body_encoding = None  # type: ignore[assignment]
    # kombu infers its own two names' tuple type; none of its options apply here.
    from_transport_options = ()  # type: ignore[assignment]
    # Set by kombu; None once the channel is closed.
    connection: Transport | None

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        # kombu's virtual.Channel.__init__ is unannotated.
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]
        self.options: BridgeOptions = connection.options
        # Kept after close(): acks from pool threads may dead-letter after the channel closed.
        self._transport = connection
        self._dead_letters = DeadLetterWriter(self.options, connection.topics, connection.producer)
        self._tags = itertools.count(1)
        self._group: Fetcher | None = None
        self._reader: Fetcher | None = None
        self._topic_queues: dict[str, str] = {}  # consumed durable queues by topic
        self._no_ack: set[str] = set()
        self._bound_readers: dict[str, set[str]] = {}  # transient queue -> exchange topics
        self._held: dict[str, deque[Delivery]] = {}
        self._ready: deque[Delivery] = deque()

    @property
    def _open(self) -> Transport:
        # Only called while the channel is open; a closed one fails on None as it always did.
        return cast("Transport", self.connection)

    # --- declaring --------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        if kwargs.get("auto_delete") or kwargs.get("exclusive"):
            self._open.transient.add(queue)
            return
        self._transport.topics.ensure(
            topic_name(queue), self.options.topic_partitions, self.options.replication_factor
        )

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        if queue in self._open.transient:
            return True
        try:
            admin = admin_client(self.options.admin_settings())
            timeout = self.options.connect_timeout
            return topic_name(queue) in admin.list_topics(timeout=timeout).topics
        except KafkaException:
            return False

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Bind as AMQP does; a transient queue starts reading its exchange's topic now."""
        # kombu's virtual.Channel.queue_bind is unannotated.
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)  # type: ignore[no-untyped-call]
        if queue in self._open.transient:
            topic = self._exchange_topic(exchange or "amq.direct")
            self._held.setdefault(queue, deque(maxlen=_HELD_LIMIT))
            topics = self._bound_readers.setdefault(queue, set())
            if topic not in topics:
                self._reader_fetcher().attach(topic)
                topics.add(topic)

    def _size(self, queue: str) -> int:
        return 0  # not known without reading offsets; see the README's differences

    def _purge(self, queue: str) -> int:
        # Kafka keeps records: the group skips them (purge marks, see celery_bridge.purges).
        if queue in self._open.transient:
            return 0
        group = self.options.group_id
        skipped = self._open.purges.purge(group, topic_name(queue))
        log.info("purged %d message(s) of %s (group %s)", skipped, queue, group)
        return skipped

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
        queues = routed_queues(self, exchange, routing_key)
        transient = self._open.transient
        topics = {topic_name(q) for q in queues if q not in transient}
        if len(topics) < len(queues) or not topics:
            topics.add(self._exchange_topic(exchange))
        return topics

    def basic_publish(
        self, message: Payload, exchange: str, routing_key: str, **kwargs: Any
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
        message_headers = message.get("headers") or {}
        # Unique per record: the same task id may be published again (retries, fanout).
        ident = f"{message_headers.get('id') or 'message'}#{next(_publishes)}"
        options = self.options
        if is_command(exchange) and not options.confirm_publish:
            # What this process published before a command is acknowledged before the
            # command exists: sent together, the broker could append the command first,
            # and a worker answering `inspect scheduled` then missed the task (about 1
            # run in 3 on Apache Kafka under load; see `Transport.settle`).
            self._send_now()
        hop = delay_hop(
            message_headers, now_ms(), options.eta_threshold, options.delay_topic_prefix
        )
        if hop is not None:  # waits in a delay tier, then goes to each destination
            self._transport.topics.ensure(
                hop.topic, DELAY_TOPIC_PARTITIONS, options.replication_factor
            )
        handles = [
            producer.enqueue(topic, ident, value, key, headers)
            if hop is None
            else producer.enqueue(hop.topic, ident, value, key, hop.headers(headers, topic))
            for topic in self.destinations(exchange, routing_key)
        ]
        if self.options.confirm_publish:
            for handle in handles:
                handle.wait(self.options.delivery_timeout)
        elif is_control(exchange):
            self._send_now()
        if is_control(exchange):
            self._keep_revocations(message)

    def _keep_revocations(self, message: Payload) -> None:
        # A revoke to every worker is kept in the revocations topic as well: workers
        # started later skip the task too (see `celery_bridge.revoking`).
        task_ids, terminate = revoking.revoked_ids(message.get("body"))
        if task_ids:
            transport = self._transport
            revoking.write(self.options, transport.topics, transport.producer, task_ids, terminate)

    def _send_now(self) -> None:
        # A flush sends at once (librdkafka skips linger.ms for it): a command or reply
        # does not wait the producer's linger, and the queue records this process
        # published before a command are in Kafka before it (see `Transport.settle`).
        # The few ms it blocks are the broker's acknowledgement. Best effort.
        try:
            self._transport.producer.flush(CONTROL_FLUSH_TIMEOUT)
        except DeliveryTimeout as exc:
            log.debug("remote-control publish not acknowledged yet: %s", exc)

    # --- consuming --------------------------------------------------------------

    def _group_fetcher(self) -> Fetcher:
        if self._group is None:
            self._group = self._open.new_fetcher(self.options.group_id)
        return self._group

    def _reader_fetcher(self) -> Fetcher:
        if self._reader is None:
            self._reader = self._open.new_fetcher(None)
        return self._reader

    def has_broadcasts(self) -> bool:
        """Whether broadcast records wait here (the transport drains them first)."""
        return self._reader is not None and (bool(self._ready) or self._reader.buffered() > 0)

    def basic_consume(
        self,
        queue: str,
        no_ack: bool,
        callback: Callable[[acks.Message], object],
        consumer_tag: str,
        **kwargs: Any,
    ) -> None:
        """Start delivering `queue`'s messages to `callback`."""
        # kombu's virtual.Channel.basic_consume is unannotated.
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)  # type: ignore[no-untyped-call]
        if no_ack:
            self._no_ack.add(queue)
        if queue in self._open.transient:
            self._ready.extend(self._held.get(queue, ()))
            self._held.get(queue, deque()).clear()
            return
        self._topic_queues[topic_name(queue)] = queue
        self._open.start_delay_dispatcher()
        fetcher = self._group_fetcher()
        fetcher.ensure_capacity(self.qos.prefetch_count)
        fetcher.subscribe(self._topic_queues)

    def basic_cancel(self, consumer_tag: str) -> None:
        """Stop delivering the consumer's queue.

        Records of the queue already fetched are not delivered and not acked: its
        partitions are revoked by the resubscription below, committed up to the first
        of them, and they are delivered again to whoever consumes the queue next.
        """
        queue = self._tag_to_queue.get(consumer_tag)
        # kombu's virtual.Channel.basic_cancel is unannotated.
        super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]
        if queue is None or queue in self._active_queues:
            return
        self._no_ack.discard(queue)
        if self._topic_queues.pop(topic_name(queue), None) is not None and self._group:
            self._group.subscribe(self._topic_queues)

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False
    ) -> None:
        """Set the prefetch count (and fetch at least that many ahead)."""
        # kombu's virtual.Channel.basic_qos is unannotated.
        super().basic_qos(prefetch_size, prefetch_count, apply_global)  # type: ignore[no-untyped-call]
        if self._group is not None:
            self._group.ensure_capacity(prefetch_count)

    def drain_events(
        self, timeout: float | None = None, callback: Callable[[Payload, str], None] | None = None
    ) -> None:
        """Deliver one message to its consumer, or raise `Empty`."""
        if not self._consumers or not self.qos.can_consume():
            raise Empty()
        item = self._next()
        if item is None:
            raise Empty()
        payload, queue = item
        (callback or self._open.deliver)(payload, queue)

    def _next(self) -> Delivery | None:
        while self._ready:
            payload, queue = self._ready.popleft()
            if queue in self._active_queues:
                return payload, queue
        # Broadcasts first: a revoke must reach Celery before the task it names (the
        # group fetcher buffers a batch only once the reader caught up: Fetcher.follow).
        for fetcher in (f for f in (self._reader, self._group) if f is not None):
            while (record := fetcher.take()) is not None:
                for delivery in self._route(fetcher, record):
                    self._ready.append(delivery)
                if self._ready:
                    return self._ready.popleft()
        return None

    def deliver_eta_tasks(self) -> None:
        """Hand Celery the buffered queue messages that carry an eta, ahead of their turn."""
        fetcher = self._group
        if fetcher is None or not self._consumers:
            return
        while self.qos.can_consume() and (record := fetcher.take_first(has_eta)) is not None:
            for payload, queue in self._route(fetcher, record):
                self._open.deliver(payload, queue)

    # --- routing fetched records to queues ---------------------------------------

    def _route(self, fetcher: Fetcher, record: Record) -> Iterator[Delivery]:
        if fetcher.grouped:
            queue = self._topic_queues.get(record.topic)
            if queue is None:
                # Consumer cancelled: the partitions are being revoked. Not acked (nobody
                # saw it): the commit on revocation stops below it, and the queue's next
                # consumer gets it. See `basic_cancel`.
                return
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
        if is_control(info["exchange"]) and reports_scheduled(payload):
            self._open.settle()
        for queue, topics in self._bound_readers.items():
            if record.topic in topics and binds(self, queue, info["exchange"], info["routing_key"]):
                copy = {**payload, "properties": {**payload["properties"]}}
                delivery = self._delivery(copy, fetcher, record, queue)
                if queue in self._active_queues:
                    yield delivery
                else:
                    self._held[queue].append(delivery)

    def _delivery(self, payload: Payload, fetcher: Fetcher, record: Record, queue: str) -> Delivery:
        properties = payload["properties"]
        properties["delivery_tag"] = f"{self.channel_id}.{next(self._tags)}"
        properties["delivery_info"]["redelivered"] = record.redelivered  # where Celery looks
        payload["_kafka"] = (fetcher, record, queue)
        if queue in self._no_ack:
            fetcher.ack(record)  # consumed without acks: done once handed over
        return payload, queue

    # --- dead letters and closing -------------------------------------------------

    def dead_letter(
        self, fetcher: Fetcher, record: Record, queue: str, reason: str, error: BaseException
    ) -> None:
        """Write `record` to the queue's dead-letter topic; its offset is done once written."""
        self._dead_letters.write(fetcher, record, queue, reason, error)

    def close(self) -> None:
        """Commit what is acked, leave the group, stop the polling threads."""
        fetchers = [f for f in (self._group, self._reader) if f is not None]
        self._group = self._reader = None
        transport = self.connection
        # kombu's virtual.Channel.close is unannotated; it detaches the channel from its transport.
        super().close()  # type: ignore[no-untyped-call]
        for fetcher in fetchers:
            fetcher.close()
            if transport is not None:
                transport.forget_fetcher(fetcher)
