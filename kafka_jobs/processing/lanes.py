"""Virtual partitions: split one partition's batch into ordered lanes by a key from the headers.

Records with the same key land in the same lane, in offset order, so per-key
order holds while lanes run in parallel. The key comes from a header (default:
the job's partition key, `kj-key`) or from a callable over the record key and
headers; the value is never decoded. Records without a key are spread over the
lanes and may run in any order relative to each other.

Pure functions, no I/O: the listener thread calls them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Message

from kafka_jobs.wire import H_KEY, header_map

log = logging.getLogger("kafka_jobs.lanes")

Partitioner = str | Callable[[bytes | None, Mapping[str, bytes | None]], object]
"""A header name, or a callable of (record key, headers) returning the lane key."""


@dataclass(frozen=True, slots=True)
class VirtualPartitions:
    """How a topic's partitions are split into lanes.

    partitioner: header name (default `kj-key`, the job's partition key) or a
        callable of (record key, headers) giving the lane key; never the value.
    max_partitions: most lanes per partition batch (default: worker concurrency).
    distribution: "balanced" (default: per batch, the biggest key groups first
        onto the least-loaded lane, so a batch with few or skewed keys still fills
        every lane) or "consistent" (a key always maps to the same lane, crc32 of
        the key; with few keys some lanes stay empty). Both keep per-key order: a
        partition's next batch starts only when every lane of this one is done.
    offset_metadata_strategy: which metadata given with `mark_as_consumed` is
        committed, lanes finishing out of order: "current" (the most recently
        given) or "exact" (the one given with the highest offset below the commit).
    """

    partitioner: Partitioner = H_KEY
    max_partitions: int | None = None
    distribution: Literal["consistent", "balanced"] = "balanced"
    offset_metadata_strategy: Literal["current", "exact"] = "current"

    def __post_init__(self) -> None:
        if self.max_partitions is not None and self.max_partitions < 1:
            raise ValueError("max_partitions must be at least 1")
        if self.distribution not in ("consistent", "balanced"):
            raise ValueError("distribution must be 'consistent' or 'balanced'")
        if self.offset_metadata_strategy not in ("current", "exact"):
            raise ValueError("offset_metadata_strategy must be 'current' or 'exact'")


def lane_key(record: Message, partitioner: Partitioner) -> bytes | None:
    """The lane key of one record (bytes), or None when it has none."""
    if isinstance(partitioner, str):
        return header_map(record.headers()).get(partitioner)
    found = partitioner(record.key(), header_map(record.headers()))
    if found is None or isinstance(found, bytes):
        return found
    return str(found).encode()


def split(
    records: Sequence[Message], options: VirtualPartitions, lanes: int
) -> list[list[Message]]:
    """Split a batch into at most `lanes` non-empty lanes, each in offset order.

    A partitioner that raises puts the whole batch in one lane (logged), so a bad
    partitioner slows a topic down instead of stopping it.
    """
    if not records:
        return []
    if lanes <= 1 or len(records) <= 1:
        return [list(records)]
    try:
        keys = [lane_key(record, options.partitioner) for record in records]
    except Exception:
        log.exception("virtual-partition partitioner failed; running this batch in one lane")
        return [list(records)]
    if options.distribution == "balanced":
        assignment = _balanced(keys, lanes)
    else:
        assignment = _consistent(keys, lanes)
    split_lanes: list[list[Message]] = [[] for _ in range(lanes)]
    for record, lane in zip(records, assignment, strict=True):
        split_lanes[lane].append(record)
    return [lane for lane in split_lanes if lane]


def _consistent(keys: list[bytes | None], lanes: int) -> list[int]:
    # crc32, not hash(): stable across processes (Python salts str/bytes hashes).
    spread = 0
    assignment = []
    for key in keys:
        if key is None:
            assignment.append(spread % lanes)
            spread += 1
        else:
            assignment.append(zlib.crc32(key) % lanes)
    return assignment


def _balanced(keys: list[bytes | None], lanes: int) -> list[int]:
    groups: dict[object, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key if key is not None else ("no-key", index), []).append(index)
    load = [0] * lanes
    assignment = [0] * len(keys)
    for members in sorted(groups.values(), key=len, reverse=True):
        lane = min(range(lanes), key=load.__getitem__)
        load[lane] += len(members)
        for index in members:
            assignment[index] = lane
    return assignment
