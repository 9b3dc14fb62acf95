"""Purging a queue whose workers are running: purge marks in a compacted topic.

Kafka deletes no single record, and a group's committed offsets can be moved from
outside only while the group has no member. So a purge is written down instead:
a *purge mark* (group, topic, each partition's end offset, the time) goes to a
compacted topic (``purge_topic``) that every worker's connection follows. A queue
consumer of that group then skips, and acks, the records below the mark that were
written before it: buffered ones at once, later fetches as they come, after a
restart or a rebalance too (a connection reads all marks before its first batch).
What Celery already took (prefetched or running) still runs, as with Redis.

When the group has no member, its committed offsets are moved to the ends as well,
so lag figures and other consumers of the group agree.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass

from confluent_kafka import Message

from celery_bridge.fetcher import Fetcher
from celery_bridge.options import BridgeOptions
from celery_bridge.topics import TopicCreator
from kafka_jobs.connection.follower import Follower
from kafka_jobs.connection.purge import GroupActive, active_members, backlog, commit_ends
from kafka_jobs.producer import JobProducer

log = logging.getLogger(__name__)

_LOAD_TIMEOUT = 10.0


@dataclass(frozen=True)
class PurgeMark:
    """Records of `topic` below `ends` written up to `at_ms` are purged for `group`."""

    group: str
    topic: str
    ends: dict[int, int]
    at_ms: int

    def encode(self) -> tuple[bytes, bytes]:
        """(key, value) of the mark's record."""
        key = json.dumps([self.group, self.topic]).encode()
        value = {"group": self.group, "topic": self.topic, "ends": self.ends, "at": self.at_ms}
        return key, json.dumps(value).encode()

    @classmethod
    def decode(cls, value: bytes) -> PurgeMark:
        """The mark of a record's value; ValueError / KeyError / TypeError if malformed."""
        data = json.loads(value)
        ends = {int(p): int(end) for p, end in data["ends"].items()}
        return cls(str(data["group"]), str(data["topic"]), ends, int(data["at"]))


class PurgeMarks:
    """The purge marks of one connection: written by `purge`, applied to its queue consumers."""

    def __init__(self, options: BridgeOptions, topics: TopicCreator, producer: JobProducer) -> None:
        self._options = options
        self._topics = topics
        self._producer = producer
        self._lock = threading.Lock()
        self._marks: dict[tuple[str, str], PurgeMark] = {}
        self._fetchers: weakref.WeakKeyDictionary[Fetcher, str] = weakref.WeakKeyDictionary()
        self._follower: Follower | None = None

    def _follow(self) -> Follower:
        with self._lock:
            if self._follower is None:
                topic = self._options.purge_topic
                self._topics.ensure(
                    topic, 1, self._options.replication_factor, {"cleanup.policy": "compact"}
                )
                self._follower = Follower(
                    self._options.consumer_settings(None),
                    topic,
                    self._on_record,
                    name="celery-bridge-purges",
                    poll_timeout=self._options.poll_timeout,
                )
            return self._follower

    def attach(self, fetcher: Fetcher, group: str) -> None:
        """`fetcher` consumes for `group`: it skips what the group's marks purged."""
        follower = self._follow()
        fetcher.gate(follower.wait_loaded)
        with self._lock:
            self._fetchers[fetcher] = group
            marks = [m for m in self._marks.values() if m.group == group]
        for mark in marks:
            _apply(fetcher, mark)

    def purge(self, group: str, topic: str) -> int:
        """Purge what `group` has not consumed of `topic`; how many records that was."""
        options = self._options
        follower = self._follow()
        if not follower.wait_loaded(_LOAD_TIMEOUT):
            raise TimeoutError(f"purge marks of {options.purge_topic} not read in time")
        with self._lock:
            earlier = self._marks.get((group, topic))
        consumer = options.consumer_settings(group)
        found = backlog(consumer, topic, earlier.ends if earlier else None, options.connect_timeout)
        if not found.waiting:
            return 0
        mark = PurgeMark(group, topic, found.ends, int(time.time() * 1000))
        key, value = mark.encode()
        handle = self._producer.enqueue(options.purge_topic, "", value, key, [])
        handle.wait(options.delivery_timeout)
        self._record(mark)
        if active_members(options.admin_settings(), group, options.connect_timeout) == 0:
            # Nobody's positions would overwrite them: move the offsets too. A member
            # that joined meanwhile makes the broker refuse: the mark does it then.
            with contextlib.suppress(GroupActive):
                commit_ends(consumer, topic, found.ends, options.connect_timeout)
        return found.waiting

    def close(self) -> None:
        """Stop following the marks."""
        with self._lock:
            follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()

    def _on_record(self, message: Message) -> None:
        value = message.value()
        if not value:
            return  # a tombstone: nothing to skip
        try:
            mark = PurgeMark.decode(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed purge mark: %r", value[:200])
            return
        self._record(mark)

    def _record(self, mark: PurgeMark) -> None:
        with self._lock:
            known = self._marks.get((mark.group, mark.topic))
            if known is not None and known.at_ms >= mark.at_ms:
                return
            self._marks[(mark.group, mark.topic)] = mark
            fetchers = [f for f, group in self._fetchers.items() if group == mark.group]
        for fetcher in fetchers:
            _apply(fetcher, mark)


def _apply(fetcher: Fetcher, mark: PurgeMark) -> None:
    for partition, end in mark.ends.items():
        fetcher.purge((mark.topic, partition), end, mark.at_ms)
