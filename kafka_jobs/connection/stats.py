"""librdkafka's statistics for a group client: lag per partition and the group's join state.

Also the polite exit: a member that leaves in the middle of a rebalance round,
after being elected its leader, makes everyone join again (and some brokers wait
for the departed leader's assignment for good), so a closing client first lets a
round in progress finish.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Container

from confluent_kafka import KafkaException

from kafka_jobs.connection.client import Client, Key

log = logging.getLogger("kafka_jobs.connection")

STATS_INTERVAL_MS = 1000
"""librdkafka statistics interval: lag per partition and the group's join state."""
JOIN_SETTLE_TIMEOUT = 10.0
"""Most seconds a closing client waits for a rebalance round to end before leaving."""


class GroupStats:
    """The last statistics report of one client (written inside poll(), owner thread).

    `lag` and `join_state` are replaced whole, so other threads may read them.
    """

    def __init__(
        self,
        interval_ms: int = STATS_INTERVAL_MS,
        forward: Callable[[str], object] | None = None,
    ) -> None:
        self.lag: dict[Key, int] = {}
        self.join_state = ""
        self.received_at = 0.0
        self.interval = max(interval_ms, 1) / 1000
        self._forward = forward

    def receive(self, raw: str, owned: Container[Key]) -> None:
        """Read one report; lag is kept for the `owned` partitions only."""
        try:
            stats = json.loads(raw)
            self.join_state = str(stats.get("cgrp", {}).get("join_state", ""))
            lag: dict[Key, int] = {}
            for topic, entry in stats.get("topics", {}).items():
                for number, partition in entry.get("partitions", {}).items():
                    value = int(partition.get("consumer_lag", -1))
                    if int(number) >= 0 and value >= 0 and (topic, int(number)) in owned:
                        lag[(topic, int(number))] = value
            self.lag = lag
            self.received_at = time.monotonic()
        except (ValueError, TypeError, AttributeError) as exc:
            log.debug("unreadable consumer statistics: %s", exc)
        if self._forward is not None:  # the user's own stats_cb
            self._forward(raw)

    def steady(self) -> bool:
        """The latest report (at most one interval old) shows no rebalance round running."""
        fresh = time.monotonic() - self.received_at < self.interval * 1.5
        return fresh and self.join_state in ("steady", "init", "")


def settle_then_close(client: Client, stats: GroupStats, name: str, batch: int) -> None:
    """Let a rebalance round in progress finish (bounded), then leave the group.

    Polling here only serves the group: the caller paused every partition.
    """
    if stats.received_at:  # statistics flow: use them to leave between rounds
        deadline = time.monotonic() + JOIN_SETTLE_TIMEOUT
        try:
            while time.monotonic() < deadline and not stats.steady():
                client.poll(batch, 0.1)
            if not stats.steady():
                log.warning("%s: left during a rebalance (%s)", name, stats.join_state)
        except KafkaException as exc:
            log.debug("waiting for a steady group before leaving: %s", exc)
    try:
        client.close()
    except (KafkaException, RuntimeError) as exc:
        log.warning("consumer close failed: %s", exc)
