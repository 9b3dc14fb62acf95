"""The Celery result backend ``kafkajobs://``: task results in a compacted Kafka topic.

    import celery_bridge  # noqa: F401  (registers kafkajobs:// for brokers and backends)
    app = Celery("proj", broker="kafkajobs://kafka:9092", backend="kafkajobs://kafka:9092")

The design of kafka-jobs' own results (`kafka_jobs.results`), for Celery's
key-value backend protocol: each store is a record keyed by Celery's key, in the
partition that key maps to (`celery_bridge.stored`); the topic is compacted and
kept for ``result_expires`` (the broker's retention bounds storage, the
``kafkajobs-expires-ms`` header makes expiry exact for readers). Every backend of a
process shares one reader per topic and configuration, outside any consumer
group, which reads only the partitions of the keys asked for: thousands of
waiting ``AsyncResult.get()`` calls cost one consumer. A key is read from the
time its task was sent when this process sent it, else from the start of its
partition (the topic holds at most ``result_expires`` of results).

Chords: Kafka has no atomic increment, so chords use Celery's ``chord_unlock``
task, as Celery's key-value backends without ``incr`` do: it polls the header
group and sends the callback once every member is ready.

What differs from Redis: a state query (``AsyncResult.state``) reads its partition
up to the end offset it asks the broker for, one round trip; ``get()`` waits for
the record without polling. A success is never replaced by a later state of the
same task (readers enforce it, so writers need not read first). After compaction
only the latest record of a key is left.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from celery import states  # type: ignore[import-untyped]
from celery.backends.base import KeyValueStoreBackend  # type: ignore[import-untyped]
from celery.exceptions import TimeoutError as CeleryTimeoutError  # type: ignore[import-untyped]
from confluent_kafka import KafkaException

from celery_bridge.options import BridgeOptions
from celery_bridge.stored import (
    EXPIRES_HEADER,
    STATUS_HEADER,
    BackendOptions,
    Stored,
    StoredFormat,
    hosts_of_url,
    text,
)
from celery_bridge.topics import TopicCreator
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.producer import JobProducer
from kafka_jobs.results.outcome import partition_of
from kafka_jobs.results.reader import Reader, shared
from kafka_jobs.settings import ClientConfig, config_key
from kafka_jobs.wire import now_ms

log = logging.getLogger(__name__)

__all__ = ["KafkaBackend"]

_FORMAT = StoredFormat()
_SENT_REMEMBERED = 100_000  # send times of recent tasks: where their results are read from
_producers: dict[tuple[tuple[str, str], ...], JobProducer] = {}
_creators: dict[tuple[tuple[str, str], ...], TopicCreator] = {}
_shared_lock = threading.Lock()
_sent_lock = threading.Lock()


def _fresh_locks_in_child() -> None:
    # Prefork children fork from a worker whose threads may hold these: start unlocked.
    global _shared_lock, _sent_lock
    _shared_lock, _sent_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class KafkaBackend(KeyValueStoreBackend):  # type: ignore[misc]  # Celery is untyped
    """Celery result backend ``kafkajobs://host:9092`` (more hosts: ``;``- or ``,``-separated).

    Settings: ``result_expires`` (the topic's retention and each record's expiry),
    ``result_extended``, ``result_serializer`` as for any Celery backend, and
    ``result_backend_transport_options`` (`celery_bridge.stored.BackendOptions`, plus
    the transport's client settings). Thread-safe: its clients are shared per process.
    """

    supports_autoexpire = True
    supports_native_join = True
    implements_incr = False
    persistent = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        transport_options = cast(
            Mapping[str, object], app.conf.get("result_backend_transport_options") or {}
        )
        self.bridge = BridgeOptions.from_transport_options(transport_options, hosts_of_url(url))
        self.options = BackendOptions.from_transport_options(transport_options)
        self.topic = self.options.results_topic
        consumer = self.bridge.consumer_settings(None)
        # A random group id per reader: left out, so every backend of the process shares one.
        consumer.pop("group.id", None)
        self.consumer_config: ClientConfig = consumer
        """The results reader's settings (the process's reader is shared by these)."""
        self._sent: OrderedDict[str, int] = OrderedDict()
        self._topic_ready = False

    def __reduce__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        return super().__reduce__(
            args, {**(kwargs or {}), "url": self.url, "expires": self.expires}
        )

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Kafka failures are worth a retry (``result_backend_always_retry``)."""
        return isinstance(exc, KafkaJobsError | KafkaException | ConnectionError)

    def _fail_chain(
        self,
        chain: Any,
        exc: BaseException,
        traceback: str | None = None,
        store_result: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        """Celery's failure of the steps after a failed one, and of the members of a group step.

        Celery marks a group step failed under the group's own id only, while the
        chain's result, that group's `GroupResult`, waits for its members: without
        this its ``get()`` never returns (Celery's issue #6437, an expected failure
        of its suite on Redis).
        """
        super()._fail_chain(chain, exc, traceback, store_result=store_result, state=state)
        members = [m for step in _steps(chain) for m in _group_members(step)]
        if members:
            self._fail_chain(members, exc, traceback, store_result=store_result, state=state)

    # --- clients (looked up per call: a forked pool child gets its own) -----------------

    def _reader(self) -> Reader[Stored]:
        self._ensure_topic()
        return shared(self.consumer_config, self.topic, _FORMAT)

    def _producer(self) -> JobProducer:
        conf = self.bridge.producer_settings()
        with _shared_lock:
            producer = _producers.get(config_key(conf))
            if producer is None:
                producer = JobProducer(conf, self.options.write_timeout)
                _producers[config_key(conf)] = producer
            return producer

    def _ensure_topic(self) -> None:
        if self._topic_ready:
            return
        conf = self.bridge.admin_settings()
        with _shared_lock:
            creator = _creators.setdefault(config_key(conf), TopicCreator(conf))
        retention = str(int(self.expires * 1000)) if self.expires else "-1"
        creator.ensure(
            self.topic,
            self.options.results_partitions,
            self.bridge.replication_factor,
            {"cleanup.policy": "compact,delete", "retention.ms": retention},
        )
        self._topic_ready = True

    # --- where a key is read from ---------------------------------------------------------

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        """Remember when the task was sent: its result is read from then on."""
        key = text(self.get_key_for_task(task_id))
        with _sent_lock:
            self._sent[key] = now_ms()
            if len(self._sent) > _SENT_REMEMBERED:
                self._sent.popitem(last=False)
        return {}

    def _since(self, key: str) -> int:
        with _sent_lock:
            return self._sent.get(key, 0)

    # --- Celery's key-value protocol -------------------------------------------------------

    def get(self, key: bytes | str) -> bytes | None:
        """The payload stored under `key` as of now (None: none, forgotten or expired)."""
        name = text(key)
        reader = self._reader()
        found = reader.known(name)
        # A final state stays (the reader follows the partition and sees a later change
        # on its own): no read to the end. chord_unlock asks every member's state.
        if found is None or not _FORMAT.ready(found) or found.expired():
            found = reader.current(name, self._since(name), self.options.read_timeout)
        return None if found is None or found.expired() else found.payload

    def mget(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """`get` of each key; one read to the end per partition."""
        names = [text(k) for k in keys]
        reader = self._reader()
        partitions = reader.partitions(self.options.read_timeout)
        synced: set[int] = set()
        # The earliest send time first: its read covers the others of its partition.
        for name in sorted(names, key=self._since):
            known = reader.known(name)
            if known is not None and _FORMAT.ready(known) and not known.expired():
                continue  # final: see `get`
            partition = partition_of(name, partitions) if partitions else -1
            if partition not in synced:
                reader.current(name, self._since(name), self.options.read_timeout)
                synced.add(partition)
        found = [reader.known(name) for name in names]
        return [None if s is None or s.expired() else s.payload for s in found]

    def set(self, key: bytes | str, value: bytes | str) -> None:
        """Store a value that is not a task state (a saved group)."""
        self._set_with_state(key, value, states.SUCCESS)

    def _set_with_state(self, key: bytes | str, value: bytes | str, state: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [(STATUS_HEADER, state.encode())]
        if self.expires:
            headers.append((EXPIRES_HEADER, str(now_ms() + int(self.expires * 1000)).encode()))
        payload = value.encode() if isinstance(value, str) else value
        self._write(text(key), payload, headers)

    def delete(self, key: bytes | str) -> None:
        """Forget `key`: a tombstone (readers drop it at once, compaction later)."""
        name = text(key)
        self._write(name, None, [])
        self._reader().drop(name)  # read as absent here at once, not after the tombstone

    def _write(
        self, key: str, payload: bytes | None, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        partitions = self._reader().partitions(self.options.read_timeout)
        if not partitions:
            raise ConnectionError(f"the results topic {self.topic} has no partitions")
        producer = self._producer()
        # Acknowledged before Celery acks the task: a stored result survives a crash.
        producer.enqueue(
            self.topic, key, payload, key.encode(), headers, partition_of(key, partitions)
        ).wait(self.options.write_timeout)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = text(task_id)
        key = self.get_key_for_task(task_id)
        # Celery's key-value backends read the current state first to keep a success;
        # here readers keep it, so only what this process already knows is checked.
        known = self._reader().known(text(key))
        if known is not None and known.status == states.SUCCESS and not known.expired():
            return result
        self._set_with_state(key, self.encode(meta), state)
        return result

    # --- waiting without polling --------------------------------------------------------

    def _wait_ready(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """The task's meta once ready, waiting up to `timeout`; None if not ready by then."""
        name = text(self.get_key_for_task(task_id))
        found = self._reader().wait(name, self._since(name), max(0.0, timeout))
        if found is not None and found.expired():
            time.sleep(max(0.0, timeout))  # as good as absent: wait out the step, do not spin
            return None
        if found is None:
            return None
        meta = cast(dict[str, Any], self.decode_result(found.payload))
        return meta if meta["status"] in states.READY_STATES else None

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The task's meta once ready (``AsyncResult.get``): woken by the record, no polling."""
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in states.READY_STATES:
                return cast(dict[str, Any], cached)
            left = None if deadline is None else deadline - time.monotonic()
            step = interval or 0.5
            meta = self._wait_ready(task_id, step if left is None else min(step, left))
            if meta is not None:
                if meta["status"] == states.SUCCESS:
                    self._cache[task_id] = meta
                return meta
            if on_interval is not None:
                on_interval()
            if deadline is not None and time.monotonic() >= deadline:
                raise CeleryTimeoutError("The operation timed out.")

    def get_many(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        on_interval: Callable[[], None] | None = None,
        max_iterations: int | None = None,
        READY_STATES: frozenset[str] = states.READY_STATES,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(task id, meta) of each task as it becomes ready (``GroupResult.join_native``).

        With `max_iterations` (one look, as ``ResultSet`` uses it) only those ready now.
        """
        ids = [text(i) for i in dict.fromkeys(task_ids)]
        if max_iterations:
            yield from self._ready_now(ids, on_message, READY_STATES)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for task_id in ids:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                step = interval or 0.5
                found = self._wait_ready(task_id, step if left is None else min(step, left))
                if found is not None:
                    if found["status"] == states.SUCCESS:
                        self._cache[task_id] = found
                    if on_message is not None:
                        on_message(found)
                    yield task_id, found
                    break
                if on_interval is not None:
                    on_interval()
                if deadline is not None and time.monotonic() >= deadline:
                    raise CeleryTimeoutError(f"Operation timed out ({timeout})")

    def _ready_now(
        self,
        ids: list[str],
        on_message: Callable[[dict[str, Any]], None] | None,
        ready_states: frozenset[str],
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for task_id, payload in zip(
            ids, self.mget([self.get_key_for_task(i) for i in ids]), strict=True
        ):
            if payload is None:
                continue
            meta = cast(dict[str, Any], self.decode_result(payload))
            if meta["status"] in ready_states:
                if on_message is not None:
                    on_message(meta)
                yield task_id, meta


def _steps(chain: object) -> list[Mapping[str, Any]]:
    """The steps of a request's chain that are signatures (it may be None or a placeholder)."""
    if not isinstance(chain, list | tuple):
        return []
    return [step for step in chain if isinstance(step, Mapping)]


def _group_members(step: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A group step's member signatures, else none."""
    if step.get("subtask_type") != "group":
        return []
    tasks = (step.get("kwargs") or {}).get("tasks") or ()
    return [task for task in tasks if isinstance(task, Mapping)]
