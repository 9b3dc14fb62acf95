"""Celery's ``revoke`` on kafkajobs://, kept in kafka-jobs' revocations topic.

Celery revokes by broadcast: only the workers running at that moment hear it, and
each keeps the ids in memory. On this transport a ``revoke`` command sent to every
worker (no ``destination``) also writes one revocation per task id to the compacted
topic of kafka-jobs' revocations (``revoke_topic``, default ``kafka-jobs.revoked``:
`kafka_jobs.revocations`), before the command goes out. Every Celery worker on
kafkajobs:// follows that topic from its beginning and adds the revocations in force
to Celery's own revoked set before it consumes its first task, and while it runs; so
a worker started (or restarted) after the revoke skips the task too, and Celery marks
it revoked as usual. Revocations written by kafka-jobs (`App.revoke`, ``kafka-jobs
revoke``) reach Celery workers the same way, and a Celery revoke reaches kafka-jobs
workers. A revocation lapses after ``revoke_ttl`` seconds (default one day; it is also
the topic's retention); inside a running worker Celery's revoked set keeps an id for
its own time (3 hours by default), as with any broker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Message

from celery_bridge import steps
from kafka_jobs.connection.follower import Follower
from kafka_jobs.processing.control import JobControl, revocation_value

if TYPE_CHECKING:
    from celery_bridge.options import BridgeOptions
    from celery_bridge.topics import TopicCreator
    from kafka_jobs.producer import JobProducer

log = logging.getLogger(__name__)

__all__ = ["RevocationsFollower", "revoked_ids", "topic_config", "write"]

# How long a worker waits at start for the revocations already written.
LOAD_TIMEOUT = 10.0


def revoked_ids(body: object) -> tuple[list[str], bool]:
    """The task ids (and ``terminate``) of a Celery ``revoke`` broadcast to every worker.

    Returns ``([], False)`` for any other remote-control message, and for a revoke
    sent to named workers only (``destination``): that one stays theirs.
    """
    if not isinstance(body, bytes | str) or "revoke" not in str(body)[:200]:
        return [], False  # cheap first: most messages are not revokes
    try:
        command = json.loads(body)
    except ValueError:
        return [], False
    if not isinstance(command, dict) or command.get("method") != "revoke":
        return [], False
    if command.get("destination"):
        return [], False
    arguments = command.get("arguments")
    if not isinstance(arguments, dict):
        return [], False
    task_id = arguments.get("task_id")
    ids = [task_id] if isinstance(task_id, str) else task_id
    if not isinstance(ids, list):
        return [], False
    return [i for i in ids if isinstance(i, str) and i], arguments.get("terminate") is True


def topic_config(options: BridgeOptions) -> dict[str, str]:
    """The revocations topic's config (as `kafka_jobs.revocations.ensure_topic` sets it)."""
    return {"cleanup.policy": "compact,delete", "retention.ms": str(int(options.revoke_ttl * 1000))}


def write(
    options: BridgeOptions,
    topics: TopicCreator,
    producer: JobProducer,
    task_ids: Iterable[str],
    terminate: bool = False,
) -> int:
    """Write a revocation per id, in force for ``revoke_ttl``; waits for the broker's ack."""
    topics.ensure(options.revoke_topic, 1, options.replication_factor, topic_config(options))
    until = int(time.time() * 1000) + int(options.revoke_ttl * 1000)
    value = revocation_value(until, terminate)
    handles = [
        producer.enqueue(options.revoke_topic, task_id, value, task_id.encode(), [])
        for task_id in task_ids
    ]
    for handle in handles:
        handle.wait(options.delivery_timeout)
    return len(handles)


class RevocationsFollower:
    """A worker's follower of the revocations topic, feeding Celery's revoked set."""

    def __init__(self, options: BridgeOptions, topics: TopicCreator) -> None:
        self._options = options
        self._topics = topics
        self._control = JobControl()  # parses records: the same format as kafka-jobs'
        self._follower: Follower | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Follow the topic; return once the revocations already written were read."""
        options = self._options
        try:
            self._topics.ensure(
                options.revoke_topic, 1, options.replication_factor, topic_config(options)
            )
        except Exception as exc:  # the follower looks it up again until it exists
            log.warning("could not create the revocations topic %s: %s", options.revoke_topic, exc)
        self._follower = Follower(
            # A group id of its own: librdkafka wants one; nothing is ever committed.
            options.consumer_settings(f"celery-bridge-revocations-{uuid.uuid4().hex}"),
            options.revoke_topic,
            self._take,
            name="celery-bridge-revocations",
            poll_timeout=options.poll_timeout,
        )
        began = time.monotonic()
        if not self._follower.wait_loaded(LOAD_TIMEOUT):
            log.warning(
                "revocations of %s not loaded after %.0fs: consuming anyway",
                options.revoke_topic,
                time.monotonic() - began,
            )

    def stop(self) -> None:
        """Stop following."""
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()

    def _take(self, message: Message) -> None:
        from celery.worker import state  # type: ignore[import-untyped]

        key = message.key()
        if not key:
            return
        task_id = key.decode(errors="replace")
        self._control.take(message)
        with self._lock:  # Celery's LimitedSet is not made for concurrent writers
            if self._control.is_revoked(task_id, int(time.time() * 1000)):
                state.revoked.add(task_id)
            elif not message.value():  # a tombstone lifts it (kafka-jobs' meaning)
                state.revoked.discard(task_id)


def _on_worker_init(sender: Any, transport_cls: type, **_: Any) -> None:
    """Celery's ``worker_init``: a kafkajobs:// worker follows the revocations topic."""
    conninfo = getattr(sender, "_conninfo", None)
    if conninfo is None or not isinstance(conninfo.transport, transport_cls):
        return
    # After the pool's children are forked (the follower's thread stays here), started
    # before the Consumer step: the revocations are in force before the first task.
    steps.add_after_pool(sender, "celery_bridge.revoking.RevocationsStep", _follower)


def _follower(worker: Any) -> RevocationsFollower:
    """The revocations step's object: the worker's transport's `RevocationsFollower`."""
    transport = worker._conninfo.transport
    return RevocationsFollower(transport.options, transport.topics)


def install(transport_cls: type) -> None:
    """Connect the ``worker_init`` hook for workers on `transport_cls` (nothing without Celery)."""
    steps.on_worker_init(transport_cls, _on_worker_init)
