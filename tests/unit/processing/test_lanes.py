"""Virtual partitions: `split` and `lane_key` over fake records (pure, no broker)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.processing.lanes import VirtualPartitions, lane_key, split
from kafka_jobs.wire import H_KEY
from tests import ROOT

Headers = list[tuple[str, bytes | str | None]] | None


class FakeRecord:
    """The three `Message` methods `lanes` reads."""

    def __init__(
        self, offset: int, headers: Headers = None, record_key: bytes | None = None
    ) -> None:
        self._offset = offset
        self._headers = headers
        self._key = record_key

    def offset(self) -> int:
        return self._offset

    def headers(self) -> Headers:
        return self._headers

    def key(self) -> bytes | None:
        return self._key

    def __repr__(self) -> str:
        return f"FakeRecord({self._offset}, {self._headers!r}, {self._key!r})"


def keyed(keys: Sequence[bytes | None], start: int = 0) -> list[Any]:
    """Records at consecutive offsets whose `kj-key` header is the given key (None: no header)."""
    return [
        FakeRecord(start + i, None if key is None else [(H_KEY, key)]) for i, key in enumerate(keys)
    ]


def key_of(record: Any) -> bytes | None:
    headers = record.headers()
    return None if headers is None else dict(headers).get(H_KEY)


def lane_of(lanes: list[list[Any]]) -> dict[int, int]:
    """Offset -> index of the lane that holds it."""
    return {record.offset(): index for index, lane in enumerate(lanes) for record in lane}


def assert_invariants(records: list[Any], lanes: list[list[Any]], limit: int) -> None:
    flat = [record for lane in lanes for record in lane]
    # Every record in exactly one lane (by identity: no copies, none lost, none twice).
    assert sorted(map(id, flat)) == sorted(map(id, records))
    assert len(flat) == len(records)
    assert all(lanes), "empty lane"
    assert 1 <= len(lanes) <= max(1, limit)
    for lane in lanes:
        offsets = [record.offset() for record in lane]
        assert offsets == sorted(offsets)
    # Same key, same lane.
    where: dict[bytes, int] = {}
    for index, lane in enumerate(lanes):
        for record in lane:
            key = key_of(record)
            if key is not None:
                assert where.setdefault(key, index) == index, key


# --- VirtualPartitions ---------------------------------------------------------------------


def test_defaults() -> None:
    options = VirtualPartitions()
    assert options.partitioner == H_KEY == "kj-key"
    assert options.max_partitions is None
    assert options.distribution == "balanced"


@pytest.mark.parametrize("bad", [0, -1])
def test_max_partitions_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_partitions"):
        VirtualPartitions(max_partitions=bad)


def test_unknown_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="distribution"):
        VirtualPartitions(distribution="random")  # type: ignore[arg-type]


# --- lane_key ------------------------------------------------------------------------------


def test_lane_key_reads_the_default_header() -> None:
    record = FakeRecord(0, [("other", b"x"), (H_KEY, b"customer-1")], record_key=b"ignored")
    assert lane_key(record, H_KEY) == b"customer-1"  # type: ignore[arg-type]


def test_lane_key_is_none_without_the_header() -> None:
    assert lane_key(FakeRecord(0, None), H_KEY) is None  # type: ignore[arg-type]
    assert lane_key(FakeRecord(0, [("other", b"x")]), H_KEY) is None  # type: ignore[arg-type]
    assert lane_key(FakeRecord(0, [(H_KEY, None)]), H_KEY) is None  # type: ignore[arg-type]


def test_lane_key_reads_a_named_header_and_encodes_str_values() -> None:
    record = FakeRecord(0, [("tenant", "acme")])
    assert lane_key(record, "tenant") == b"acme"  # type: ignore[arg-type]


def test_lane_key_first_header_wins_on_repeats() -> None:
    record = FakeRecord(0, [(H_KEY, b"first"), (H_KEY, b"second")])
    assert lane_key(record, H_KEY) == b"first"  # type: ignore[arg-type]


def test_partitioner_callable_gets_record_key_and_header_map() -> None:
    seen: list[tuple[bytes | None, dict[str, bytes | None]]] = []

    def partitioner(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        seen.append((key, dict(headers)))
        return key

    record = FakeRecord(3, [("a", b"1"), ("b", "2")], record_key=b"rk")
    assert lane_key(record, partitioner) == b"rk"  # type: ignore[arg-type]
    assert seen == [(b"rk", {"a": b"1", "b": b"2"})]


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (b"raw", b"raw"),
        ("text", b"text"),
        ("ünï", "ünï".encode()),
        (42, b"42"),
        (0, b"0"),
        (None, None),
        (b"", b""),
    ],
)
def test_partitioner_return_types(returned: object, expected: bytes | None) -> None:
    def partitioner(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        return returned

    assert lane_key(FakeRecord(0), partitioner) == expected  # type: ignore[arg-type]


# --- split: trivial cases ------------------------------------------------------------------


@pytest.mark.parametrize("lanes", [1, 0, -3])
def test_one_lane_or_fewer_keeps_the_batch_whole(lanes: int) -> None:
    records = keyed([b"a", b"b", b"c", None])
    assert split(records, VirtualPartitions(distribution="consistent"), lanes) == [records]


def test_a_single_record_is_one_lane() -> None:
    records = keyed([b"a"])
    assert split(records, VirtualPartitions(distribution="consistent"), 8) == [records]


def test_split_returns_lists_not_the_input() -> None:
    records = keyed([b"a", b"b"])
    lanes = split(records, VirtualPartitions(distribution="consistent"), 1)
    assert lanes == [records]
    assert lanes[0] is not records


# --- split: consistent ---------------------------------------------------------------------


def test_consistent_lane_is_crc32_of_the_key_mod_lanes() -> None:
    keys = [f"customer-{i}".encode() for i in range(40)]
    records = keyed(keys)
    lanes = split(records, VirtualPartitions(distribution="consistent"), 4)
    assert_invariants(records, lanes, 4)
    # Lanes are the non-empty ones of crc32(key) % 4, in lane order.
    expected: list[list[Any]] = [[] for _ in range(4)]
    for record, key in zip(records, keys, strict=True):
        expected[zlib.crc32(key) % 4].append(record)
    assert lanes == [lane for lane in expected if lane]


def test_consistent_keeps_a_key_together_and_in_order() -> None:
    keys = [b"a", b"b", b"a", b"c", b"a", b"b", b"d", b"a"]
    records = keyed(keys, start=100)
    lanes = split(records, VirtualPartitions(distribution="consistent"), 3)
    assert_invariants(records, lanes, 3)
    lane_a = next(lane for lane in lanes if records[0] in lane)
    assert [r.offset() for r in lane_a if key_of(r) == b"a"] == [100, 102, 104, 107]


def test_consistent_is_the_same_across_calls() -> None:
    keys = [f"k{i % 7}".encode() for i in range(50)]
    first = split(keyed(keys), VirtualPartitions(distribution="consistent"), 5)
    second = split(keyed(keys), VirtualPartitions(distribution="consistent"), 5)
    assert [[r.offset() for r in lane] for lane in first] == [
        [r.offset() for r in lane] for lane in second
    ]


def test_consistent_same_key_same_lane_across_batches() -> None:
    # A key maps to lane crc32 % n in every batch, not to a position in the batch.
    batch_one = split(
        keyed([b"x", b"y", b"z", b"w"]), VirtualPartitions(distribution="consistent"), 4
    )
    batch_two = split(
        keyed([b"q", b"x", b"r"], start=10), VirtualPartitions(distribution="consistent"), 4
    )
    for lanes in (batch_one, batch_two):
        for lane in lanes:
            for record in lane:
                key = key_of(record)
                assert key is not None
                mates = {zlib.crc32(key_of(other) or b"") % 4 for other in lane}
                assert mates == {zlib.crc32(key) % 4}


_CROSS_PROCESS = """
import sys
from kafka_jobs.processing.lanes import VirtualPartitions, split
from tests.unit.processing.test_lanes import keyed
keys = [f"key-{i}".encode() for i in range(64)]
lanes = split(keyed(keys), VirtualPartitions(distribution="consistent"), 6)
print([[r.offset() for r in lane] for lane in lanes])
"""


def test_consistent_mapping_is_stable_across_processes() -> None:
    # crc32, not hash(): a differently salted interpreter must agree.
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _CROSS_PROCESS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.add(result.stdout.strip())
    keys = [f"key-{i}".encode() for i in range(64)]
    here = split(keyed(keys), VirtualPartitions(distribution="consistent"), 6)
    outputs.add(str([[r.offset() for r in lane] for lane in here]))
    assert len(outputs) == 1


def test_consistent_spreads_records_without_a_key() -> None:
    records = keyed([None] * 8)
    lanes = split(records, VirtualPartitions(distribution="consistent"), 4)
    assert_invariants(records, lanes, 4)
    assert [[r.offset() for r in lane] for lane in lanes] == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_consistent_fewer_keys_than_lanes_uses_fewer_lanes() -> None:
    records = keyed([b"only"] * 10)
    lanes = split(records, VirtualPartitions(distribution="consistent"), 4)
    assert lanes == [records]


# --- split: balanced -----------------------------------------------------------------------


def skewed_batch() -> tuple[list[Any], list[bytes]]:
    keys = [b"hot"] * 50 + [f"cold-{i}".encode() for i in range(30)]
    # Interleave so the hot key is not one contiguous run.
    order = sorted(range(len(keys)), key=lambda i: (i % 3, i))
    shuffled = [keys[i] for i in order]
    return keyed(shuffled), shuffled


def test_balanced_fills_every_lane_on_a_skewed_batch() -> None:
    records, _ = skewed_batch()
    lanes = split(records, VirtualPartitions(distribution="balanced"), 4)
    assert_invariants(records, lanes, 4)
    assert len(lanes) == 4
    hot_lane = next(lane for lane in lanes if any(key_of(r) == b"hot" for r in lane))
    # The biggest group goes first onto an empty lane; nothing else is ever lighter there.
    assert all(key_of(r) == b"hot" for r in hot_lane)
    assert len(hot_lane) == 50
    others = sorted(len(lane) for lane in lanes if lane is not hot_lane)
    assert others == [10, 10, 10]


def test_balanced_spreads_records_without_a_key() -> None:
    records = keyed([None] * 9)
    lanes = split(records, VirtualPartitions(distribution="balanced"), 3)
    assert_invariants(records, lanes, 3)
    assert sorted(len(lane) for lane in lanes) == [3, 3, 3]


def test_balanced_groups_biggest_first_onto_least_loaded() -> None:
    keys = [b"a"] * 5 + [b"b"] * 3 + [b"c"] * 2 + [b"d"] * 2
    records = keyed(keys)
    lanes = split(records, VirtualPartitions(distribution="balanced"), 2)
    assert_invariants(records, lanes, 2)
    # a(5) -> lane 0; b(3) -> lane 1; c(2) -> lane 1 (3 < 5); d(2) -> lane 0 (5 == 5, first).
    assert [sorted({key_of(r) for r in lane}) for lane in lanes] == [[b"a", b"d"], [b"b", b"c"]]


def test_balanced_single_key_is_one_lane() -> None:
    records = keyed([b"k"] * 6)
    assert split(records, VirtualPartitions(distribution="balanced"), 4) == [records]


# --- split: partitioners -------------------------------------------------------------------


def test_split_by_a_named_header() -> None:
    records = [FakeRecord(i, [("tenant", f"t{i % 2}".encode())]) for i in range(6)]
    lanes = split(records, VirtualPartitions(partitioner="tenant"), 4)  # type: ignore[arg-type]
    got = sorted([r.offset() for r in lane] for lane in lanes)
    if zlib.crc32(b"t0") % 4 == zlib.crc32(b"t1") % 4:
        assert got == [[0, 1, 2, 3, 4, 5]]
    else:
        assert got == [[0, 2, 4], [1, 3, 5]]


@pytest.mark.parametrize("distribution", ["consistent", "balanced"])
@pytest.mark.parametrize(
    "to_key",
    [
        lambda key: key,  # bytes
        lambda key: key.decode(),  # str
        lambda key: int(key.decode()),  # int
    ],
    ids=["bytes", "str", "int"],
)
def test_partitioner_callable_on_record_key(distribution: str, to_key: Any) -> None:
    records = [FakeRecord(i, None, record_key=str(i % 3).encode()) for i in range(12)]

    def partitioner(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        assert key is not None
        return to_key(key)

    options = VirtualPartitions(partitioner=partitioner, distribution=distribution)  # type: ignore[arg-type]
    lanes = split(records, options, 3)  # type: ignore[arg-type]
    assert sum(map(len, lanes)) == 12
    for lane in lanes:
        assert {r.offset() for r in lane} == {
            o for o in range(12) if o % 3 in {r.offset() % 3 for r in lane}
        }
        offsets = [r.offset() for r in lane]
        assert offsets == sorted(offsets)
    if distribution == "balanced":
        assert len(lanes) == 3
    else:
        expected = {zlib.crc32(str(k).encode()) % 3 for k in range(3)}
        assert len(lanes) == len(expected)


def test_partitioner_str_and_bytes_results_share_a_lane() -> None:
    records = [FakeRecord(i, [("k", f"user-{i % 5}".encode())]) for i in range(20)]

    def as_str(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        value = headers["k"]
        assert value is not None
        return value.decode()

    def as_bytes(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        return headers["k"]

    by_str = split(records, VirtualPartitions(partitioner=as_str), 4)  # type: ignore[arg-type]
    by_bytes = split(records, VirtualPartitions(partitioner=as_bytes), 4)  # type: ignore[arg-type]
    assert by_str == by_bytes


def test_partitioner_returning_none_spreads() -> None:
    def nothing(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        return None

    records = [FakeRecord(i) for i in range(6)]
    lanes = split(records, VirtualPartitions(partitioner=nothing), 3)  # type: ignore[arg-type]
    assert [[r.offset() for r in lane] for lane in lanes] == [[0, 3], [1, 4], [2, 5]]


@pytest.mark.parametrize("distribution", ["consistent", "balanced"])
def test_raising_partitioner_degrades_to_one_lane_and_logs(
    distribution: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(key: bytes | None, headers: Mapping[str, bytes | None]) -> object:
        if key == b"3":
            raise RuntimeError("partitioner bug")
        return key

    records = [FakeRecord(i, None, record_key=str(i).encode()) for i in range(6)]
    options = VirtualPartitions(partitioner=broken, distribution=distribution)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="kafka_jobs.lanes"):
        lanes = split(records, options, 4)  # type: ignore[arg-type]
    assert lanes == [records]
    assert [r.name for r in caplog.records] == ["kafka_jobs.lanes"]
    assert caplog.records[0].levelno == logging.ERROR
    assert caplog.records[0].exc_info is not None
    assert isinstance(caplog.records[0].exc_info[1], RuntimeError)


# --- properties ----------------------------------------------------------------------------

# A small alphabet so that keys repeat; None is "no key".
key_lists = st.lists(
    st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", b"", b"\xff"])),
    min_size=0,
    max_size=60,
)
distributions = st.sampled_from(["consistent", "balanced"])


@given(keys=key_lists, lanes=st.integers(1, 10), distribution=distributions)
def test_split_invariants(keys: list[bytes | None], lanes: int, distribution: str) -> None:
    records = keyed(keys, start=1000)
    if not records:
        return  # the listener never splits an empty batch
    result = split(records, VirtualPartitions(distribution=distribution), lanes)  # type: ignore[arg-type]
    assert_invariants(records, result, lanes)


@given(
    keys=st.lists(st.binary(min_size=1, max_size=4), min_size=2, max_size=40),
    lanes=st.integers(2, 10),
)
def test_consistent_property_same_lane_iff_same_crc(keys: list[bytes], lanes: int) -> None:
    records = keyed(keys)
    where = lane_of(split(records, VirtualPartitions(distribution="consistent"), lanes))
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            same_bucket = zlib.crc32(a) % lanes == zlib.crc32(b) % lanes
            assert (where[i] == where[j]) == same_bucket


@given(
    keys=st.lists(st.binary(min_size=1, max_size=3), min_size=2, max_size=40),
    lanes=st.integers(2, 8),
)
def test_balanced_property_uses_as_many_lanes_as_it_can(keys: list[bytes], lanes: int) -> None:
    records = keyed(keys)
    result = split(records, VirtualPartitions(distribution="balanced"), lanes)
    assert_invariants(records, result, lanes)
    assert len(result) == min(lanes, len(set(keys)))
    # Greedy bound: no lane exceeds the biggest group or the average load plus it.
    biggest = max(keys.count(k) for k in set(keys))
    assert max(map(len, result)) <= max(biggest, len(keys) / lanes + biggest)


@given(nones=st.integers(2, 40), lanes=st.integers(2, 8), distribution=distributions)
def test_keyless_records_fill_min_of_lanes_and_records(
    nones: int, lanes: int, distribution: str
) -> None:
    records = keyed([None] * nones)
    result = split(records, VirtualPartitions(distribution=distribution), lanes)  # type: ignore[arg-type]
    assert_invariants(records, result, lanes)
    assert len(result) == min(lanes, nones)
    sizes = [len(lane) for lane in result]
    assert max(sizes) - min(sizes) <= 1
