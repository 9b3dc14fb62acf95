"""Acknowledgements: delivered messages that remember their record, and the QoS that settles them.

An ack marks the record done in its fetcher's offset tracker (committed once every
record below it is); a reject requeues it on this worker or dead-letters it; a body
that could not be decoded is dead-lettered at its ack instead of being dropped.
Acks come from any thread (Celery's pool threads), in any order.
"""

from __future__ import annotations

import threading
from typing import IO, TYPE_CHECKING, Any

from kombu.transport import virtual

from celery_bridge.dead_letters import REASON_NOT_DECODABLE, REASON_REJECTED, Rejected
from celery_bridge.fetched import Record
from celery_bridge.fetcher import Fetcher

if TYPE_CHECKING:
    from celery_bridge.channel import Channel

#: A kombu message as a dict (body, headers, properties...), the form kombu delivers.
Payload = dict[str, Any]
#: Where a delivered message came from: its fetcher, its record and the queue it went to.
Source = tuple[Fetcher, Record, str]


class Message(virtual.Message):
    """A kombu message that remembers the record it came from."""

    def __init__(self, payload: Payload, channel: Channel | None = None, **kw: Any) -> None:
        # kombu's virtual.Message.__init__ is unannotated.
        super().__init__(payload, channel=channel, **kw)  # type: ignore[no-untyped-call]
        self.source: Source | None = payload.get("_kafka")
        self.decode_error: BaseException | None = None

    def decode(self) -> Any:  # the body as the serializer made it: any type
        """Decode the body; a failure is remembered so the ack dead-letters the record."""
        try:
            # kombu's Message.decode is unannotated.
            return super().decode()  # type: ignore[no-untyped-call]
        except Exception as exc:
            self.decode_error = exc
            raise


class QoS(virtual.QoS):
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

    def restore_unacked(self) -> list[tuple[BaseException, Message]]:
        """Forget unacked messages: their offsets were not committed, Kafka redelivers them."""
        with self._lock:
            self._unacked.clear()
        return []  # kombu's (error, message) pairs of failed restores: nothing is restored

    def restore_unacked_once(self, stderr: IO[str] | None = None) -> None:
        """As `restore_unacked` (called when the channel closes)."""
        self.restore_unacked()

    def restore_visible(self, *args: object, **kwargs: object) -> None:
        """Nothing to do: there is no visibility timeout."""
