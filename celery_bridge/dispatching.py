"""The delay dispatcher of a Celery worker process: moves due delayed tasks to their queues.

Celery users run only ``celery worker``, so the bridge runs kafka-jobs' delay
dispatcher (`kafka_jobs.delay.dispatcher.DelayDispatcher`) itself: one per worker
process and delay topic prefix, started when a connection of the process starts
consuming a durable queue, stopped when the last such connection closes. It joins
the group ``<delay_topic_prefix>.dispatcher`` with the bridge's client settings, as
kafka-jobs workers of the same prefix do: on one cluster they share the work, and
each delayed record (a Celery task or a kafka-jobs job) is moved by one of them.
"""

from __future__ import annotations

import logging
import os
import threading

from confluent_kafka import KafkaException

from celery_bridge.options import BridgeOptions
from kafka_jobs.connection.admin import TopicCreationFailed, admin_client, create_missing
from kafka_jobs.delay.dispatcher import DelayDispatcher
from kafka_jobs.delay.tiers import cancel_topic, tier_topics
from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.producer import JobProducer

log = logging.getLogger("celery_bridge.transport")

#: Partitions of the delay topics, as the kafka-jobs worker creates them.
DELAY_TOPIC_PARTITIONS = 1


class DispatcherFailed(ConnectionError):
    """The process's delay dispatcher stopped on an error (Celery reconnects)."""


def delay_topics(prefix: str) -> list[str]:
    """The tier topics and the cancellation topic of `prefix`."""
    return [*tier_topics(prefix), cancel_topic(prefix)]


def create_delay_topics(options: BridgeOptions) -> None:
    """Create the missing delay topics of `options.delay_topic_prefix` (a failure is logged)."""
    wanted = delay_topics(options.delay_topic_prefix)
    try:
        admin = admin_client(options.admin_settings())
        created = create_missing(
            admin,
            wanted,
            DELAY_TOPIC_PARTITIONS,
            options.replication_factor,
            options.connect_timeout,
        )
    except (KafkaException, TopicCreationFailed) as exc:
        # The dispatcher subscribes anyway; a tier it cannot read shows up in its log.
        log.warning("could not create delay topics %s: %s", wanted, exc)
        return
    if created:
        log.info("created delay topics: %s", ", ".join(created))


class ProcessDispatcher:
    """One running `DelayDispatcher`, shared by the connections of a process that consume."""

    def __init__(self, options: BridgeOptions, producer: JobProducer) -> None:
        self.options = options
        self.users = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._dispatcher = DelayDispatcher(
            options, producer, EventBus(), self._stopping, self._crashed
        )

    def _crashed(self, error: BaseException) -> None:
        self.error = error

    def start(self) -> None:
        """Create the delay topics, then start the dispatcher's thread."""
        create_delay_topics(self.options)
        self._dispatcher.start()
        log.info(
            "delay dispatcher started (prefix %s, group %s)",
            self.options.delay_topic_prefix,
            self._dispatcher.group_id,
        )

    def stop(self, timeout: float) -> None:
        """Stop the thread: it commits what it moved and leaves its group (bounded wait)."""
        self._stopping.set()
        self._dispatcher.join(timeout)
        if self._dispatcher.thread.is_alive():
            log.warning("delay dispatcher did not stop within %.0fs", timeout)


_lock = threading.Lock()
_running: dict[tuple[int, str, str], ProcessDispatcher] = {}


def acquire(options: BridgeOptions, producer: JobProducer) -> ProcessDispatcher:
    """This process's dispatcher for `options`' cluster and prefix, started on first use."""
    key = (os.getpid(), options.bootstrap_servers, options.delay_topic_prefix)
    with _lock:
        shared = _running.get(key)
        if shared is None or shared.error is not None:
            shared = ProcessDispatcher(options, producer)
            shared.start()
            _running[key] = shared
        shared.users += 1
        return shared


def release(shared: ProcessDispatcher) -> None:
    """One user of `shared` is done with it; the last one stops it."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        for key, running in list(_running.items()):
            if running is shared:
                del _running[key]
    shared.stop(shared.options.connect_timeout)
