"""JobBuilder: a fetched batch becomes one job of the records not done yet, and is registered."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.options import TopicOptions
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.worker.building import JobBuilder


class Record:
    """The part of a consumed record the builder reads."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


def batch(*offsets: int) -> list[Message]:
    return cast(list[Message], [Record(o) for o in offsets])


def builder() -> JobBuilder:
    return JobBuilder("g", {}, 1, lambda: None)


def offsets_of(jobs: list[Job]) -> list[list[int]]:
    return [[cast(int, r.offset()) for r in job.records] for job in jobs]


def test_a_fresh_batch_is_one_job_of_every_record() -> None:
    state = PartitionState("t", 0)
    jobs = builder().build(("t", 0), state, batch(3, 4, 7))
    assert offsets_of(jobs) == [[3, 4, 7]]
    assert state.tracker.last_registered == 7


def test_records_a_former_owner_finished_are_registered_but_not_run() -> None:
    state = PartitionState("t", 0)
    state.tracker.mark_done([5, 7])  # from commit metadata, before anything is fetched
    jobs = builder().build(("t", 0), state, batch(5, 6, 7, 8))
    assert offsets_of(jobs) == [[6, 8]]
    assert state.tracker.committable() == 6  # 5 was done: the mark passed it at once
    jobs[0].done_offsets.extend([6, 8])
    jobs[0].mark_progress()
    assert state.tracker.committable() == 9


def test_a_batch_that_is_all_done_builds_no_job() -> None:
    state = PartitionState("t", 0)
    state.tracker.mark_done([0, 1])
    assert builder().build(("t", 0), state, batch(0, 1)) == []
    assert state.tracker.committable() == 2


def test_going_back_runs_again_from_there() -> None:
    state = PartitionState("t", 0)
    b = builder()
    first = b.build(("t", 0), state, batch(0, 1, 2))
    first[0].done_offsets.extend([0, 1, 2])
    first[0].mark_progress()
    assert offsets_of(b.build(("t", 0), state, batch(1, 2, 3))) == [[1, 2, 3]]
    assert state.tracker.committable() == 1


@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=30),
    st.sets(st.integers(0, 90), max_size=20),
)
def test_the_job_holds_exactly_the_records_not_known_done(
    gaps: list[int], finished: set[int]
) -> None:
    offsets, offset = [], -1
    for gap in gaps:
        offset += gap
        offsets.append(offset)
    state = PartitionState("t", 0)
    if finished:
        state.tracker.mark_done(finished)
    jobs = builder().build(("t", 0), state, batch(*offsets))
    expected = [o for o in offsets if o not in finished]
    assert offsets_of(jobs) == ([expected] if expected else [])


class KeyedRecord(Record):
    """A record with a lane key (its record key)."""

    def key(self) -> bytes:
        return str(self._offset).encode()

    def headers(self) -> None:
        return None


def test_a_collapsed_batch_reruns_sequentially_though_later_lanes_finished() -> None:
    # The batch's last record finished in its own lane before the lane of the first
    # one failed: the collapse lasts until every record up to the last is done.
    virtual = VirtualPartitions(partitioner=lambda key, headers: key)
    b = JobBuilder("g", {"t": TopicOptions(virtual_partitions=virtual)}, 3, lambda: None)
    state, key = PartitionState("t", 0), ("t", 0)
    fetched = cast(list[Message], [KeyedRecord(o) for o in (0, 1, 2)])
    lanes = b.build(key, state, fetched)
    assert offsets_of(lanes) == [[0], [1], [2]] and lanes[0].batch is not None
    state.tracker.mark_done([1, 2])  # the other lanes finished; offset 0's lane failed
    state.tracker.rewind(0)  # what the listener does when the last lane of a collapsed batch ends
    b.collapsed[key] = lanes[0].batch.last_offset
    (rerun,) = b.build(key, state, fetched)
    assert offsets_of([rerun]) == [[0]] and rerun.batch is None  # one job, no lanes
    rerun.done_offsets.append(0)
    rerun.mark_progress()
    assert state.tracker.committable() == 3
    after = b.build(key, state, cast(list[Message], [KeyedRecord(o) for o in (3, 4)]))
    assert offsets_of(after) == [[3], [4]]  # the collapsed batch is behind: lanes again
    assert key not in b.collapsed
