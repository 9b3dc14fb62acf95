"""Consumer-group status: committed offset, end offset and lag per partition (`kafka-jobs status`).

Lag is end offset minus committed offset, as the broker reports them. Some
brokers misreport end offsets (the embedded Tansu after multi-record batches);
the figures are then only as good as the broker's. Whether a partition is paused,
which worker process owns it, and each worker's counts of expired, revoked,
time-limited, rate-limited and throttled jobs (`control_counts`) come from the
states running workers publish (`kafka_jobs.instrumentation.publisher`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

from kafka_jobs.app import App
from kafka_jobs.connection.admin import admin_client
from kafka_jobs.connection.client import Client

if TYPE_CHECKING:
    from kafka_jobs.instrumentation.publisher import WorkerState


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition of a consumed (or dead-letter) topic."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    owner: str
    kind: str  # "jobs" or "dead-letter"
    paused: bool | None = None  # None: no worker state names the partition
    worker: str | None = None  # "host:pid" of the worker process that owns it

    def as_dict(self) -> dict[str, object]:
        """For `--json`."""
        return asdict(self)


def collect(
    app: App,
    group: str,
    topics: list[str],
    dead_letters: list[str],
    states: list[WorkerState] | None = None,
) -> list[PartitionStatus]:
    """Read committed and end offsets for `topics` (as `group`) and depths of `dead_letters`.

    `states`: worker states (`read_states`) for the paused flag and the owning process.
    """
    held = _held(group, states or [])
    probe = Client(
        {
            **app.settings.consumer_settings(f"kafka-jobs-status-{uuid.uuid4().hex}"),
            "group.id": group,
        }
    )
    try:
        owners = _owners(app, group) if topics else {}
        rows: list[PartitionStatus] = []
        for kind, names in (("jobs", topics), ("dead-letter", dead_letters)):
            for topic in names:
                numbers = probe.partitions_of(topic)
                if numbers is None:
                    continue
                keys = [(topic, p) for p in numbers]
                partitions = [TopicPartition(topic, p) for p in numbers]
                committed = probe.committed(keys) if kind == "jobs" else partitions
                for tp, done in zip(partitions, committed, strict=True):
                    low, high = probe.watermarks((topic, tp.partition))
                    position = done.offset if kind == "jobs" and done.offset >= 0 else None
                    lag = (high - position) if position is not None else (high - low)
                    paused, worker = held.get((topic, tp.partition), (None, None))
                    rows.append(
                        PartitionStatus(
                            group=group if kind == "jobs" else "",
                            topic=topic,
                            partition=tp.partition,
                            committed=position,
                            end=high,
                            lag=max(0, lag),
                            owner=owners.get((topic, tp.partition), "-"),
                            kind=kind,
                            paused=paused,
                            worker=worker,
                        )
                    )
        return rows
    finally:
        probe.close()


CONTROL_COUNTS = ("expired", "revoked", "time_limited", "rate_limited", "throttled")
"""Counts of jobs not started or held, in worker states' `totals` (see `metrics`):
expired, revoked, ended by a time limit, held for a rate-limit token (per hold),
and partition pauses of topic throttling."""


def control_counts(totals: Mapping[str, int]) -> dict[str, int]:
    """The `CONTROL_COUNTS` of one worker's (or a sum of) totals; 0 where a state has none."""
    return {name: int(totals.get(name, 0)) for name in CONTROL_COUNTS}


def describe_control_counts(totals: Mapping[str, int]) -> str:
    """`control_counts` as one short cell: "expired 0, revoked 1, time-limited 0, ..."."""
    counts = control_counts(totals)
    return ", ".join(f"{name.replace('_', '-')} {value:,}" for name, value in counts.items())


def _held(group: str, states: list[WorkerState]) -> dict[tuple[str, int], tuple[bool, str]]:
    """Partition -> (paused, "host:pid") from the group's live worker states."""
    held: dict[tuple[str, int], tuple[bool, str]] = {}
    for state in states:
        if state.get("group") != group:
            continue
        for entry in state.get("partitions", []):
            key = (entry["topic"], int(entry["partition"]))
            held[key] = (bool(entry.get("paused")), f"{state['host']}:{state['pid']}")
    return held


def _owners(app: App, group: str) -> dict[tuple[str, int], str]:
    """Partition -> "client-id@host" from the group description (empty if the broker says none)."""
    admin = admin_client(app.settings.admin_settings())
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    except Exception:
        return {}
    owners: dict[tuple[str, int], str] = {}
    for member in described.members or []:
        assignment = member.assignment.topic_partitions if member.assignment else []
        for tp in assignment:
            owners[(tp.topic, tp.partition)] = f"{member.client_id}@{member.host}"
    return owners
