"""Job-given offset metadata: how it shares the commit with the bitmap, which one is committed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.processing import offset_metadata
from kafka_jobs.processing.jobs import PartitionState


def test_bitmap_and_job_text_share_the_commit() -> None:
    bitmap = offset_metadata.encode(100, {102, 105})
    both = offset_metadata.compose(bitmap, "cursor=7|x")
    assert offset_metadata.split(both) == (bitmap, "cursor=7|x")
    assert offset_metadata.decode(100, both) == {102, 105}
    assert offset_metadata.split(offset_metadata.compose("", "only")) == ("v1:", "only")
    assert offset_metadata.decode(100, offset_metadata.compose("", "only")) == set()
    assert offset_metadata.compose(bitmap, None) == bitmap
    # Text another tool committed is all the job's.
    assert offset_metadata.split("checkpoint-3") == ("", "checkpoint-3")
    assert offset_metadata.split(None) == ("", None)


@given(st.text(max_size=300), st.sets(st.integers(101, 5000), max_size=200))
def test_any_text_round_trips_next_to_any_bitmap(text: str, done: set[int]) -> None:
    both = offset_metadata.compose(offset_metadata.encode(100, done), text)
    assert offset_metadata.split(both)[1] == text
    assert offset_metadata.decode(100, both) <= done  # never a record that did not finish


def test_exact_takes_the_highest_below_the_commit_current_the_latest() -> None:
    state = PartitionState("t", 0)
    state.committed_metadata = "from-the-last-owner"
    assert state.metadata_for_commit(5, "exact") == "from-the-last-owner"
    for offset, text in ((5, "a"), (7, "c"), (9, "b")):  # lanes finish out of order
        state.give_metadata(offset, text)
    assert state.metadata_for_commit(8, "exact") == "c"
    assert state.metadata_for_commit(8, "current") == "b"
    assert state.metadata_for_commit(10, "exact") == "b"
    # Nothing new given: the last one stays.
    assert state.metadata_for_commit(12, "exact") == "b"
    assert set(state.given_metadata) == {9}
