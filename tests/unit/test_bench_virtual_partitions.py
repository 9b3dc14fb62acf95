"""bench/virtual_partitions: the lanes its notes report are the lanes the library makes."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.virtual_partitions import key_counts
from bench.virtual_partitions_report import BATCH, LANES, lane_loads
from kafka_jobs.processing.lanes import VirtualPartitions, split
from kafka_jobs.wire import H_KEY


class FakeRecord:
    """The `Message` methods `split` reads: the job key travels in the kj-key header."""

    def __init__(self, offset: int, key: str) -> None:
        self._offset = offset
        self._headers = [(H_KEY, key.encode())]

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def key(self) -> bytes | None:
        return None


@given(keys=st.integers(1, 5000), distribution=st.sampled_from(["balanced", "consistent"]))
def test_lane_loads_match_the_split_of_a_batch(keys: int, distribution: str) -> None:
    records = [FakeRecord(i, f"k{i % keys}") for i in range(BATCH)]
    options = VirtualPartitions(max_partitions=LANES, distribution=distribution)  # type: ignore[arg-type]
    made = sorted(len(lane) for lane in split(records, options, LANES))  # type: ignore[arg-type]
    computed = sorted(n for n in lane_loads(keys, distribution) if n)
    assert made == computed


def test_few_keys_fill_every_lane_only_when_balanced() -> None:
    # Issue 21's case: 64 keys on 32 lanes.
    assert max(lane_loads(64, "balanced")) == 32
    assert max(lane_loads(64, "consistent")) > 48


def test_key_counts_parse_a_list_and_refuse_bad_ones() -> None:
    assert key_counts("64,4000") == [64, 4000]
    for bad in ("", "0", "64,64", "x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            key_counts(bad)
