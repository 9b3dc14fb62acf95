"""OffsetTracker: commit one past the longest finished prefix, never past unfinished work."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kafka_jobs.processing.offsets import OffsetTracker


def expected_committable(registered: list[int], done: set[int]) -> int | None:
    """The reference model: one past the last offset of the longest all-done prefix."""
    result = None
    for offset in registered:
        if offset not in done:
            break
        result = offset + 1
    return result


def gapped_offsets(gaps: list[int], start: int = 0) -> list[int]:
    """Strictly increasing offsets with the given gaps (1 = contiguous)."""
    offsets, offset = [], start
    for gap in gaps:
        offset += gap
        offsets.append(offset)
    return offsets


# --- examples -----------------------------------------------------------------


def test_nothing_committable_before_anything_finished() -> None:
    tracker = OffsetTracker()
    assert tracker.committable() is None
    tracker.register([0, 1, 2])
    assert tracker.committable() is None
    assert tracker.in_flight == 3


def test_out_of_order_completion_waits_for_the_lowest() -> None:
    tracker = OffsetTracker()
    tracker.register([10, 11, 12])
    tracker.mark_done([12])
    tracker.mark_done([11])
    assert tracker.committable() is None
    tracker.mark_done([10])
    assert tracker.committable() == 13
    assert tracker.in_flight == 0


def test_gaps_commit_one_past_the_finished_offset_not_up_to_the_next_registered() -> None:
    tracker = OffsetTracker()
    tracker.register([3, 7, 20])
    tracker.mark_done([3])
    assert tracker.committable() == 4
    tracker.mark_done([20])
    assert tracker.committable() == 4
    tracker.mark_done([7])
    assert tracker.committable() == 21


def test_committable_stays_after_everything_finished_and_new_registrations() -> None:
    tracker = OffsetTracker()
    tracker.register([0, 1])
    tracker.mark_done([0, 1])
    tracker.register([5, 6])
    assert tracker.committable() == 2
    tracker.mark_done([6])
    assert tracker.committable() == 2
    tracker.mark_done([5])
    assert tracker.committable() == 7


# --- ordering is enforced -------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [([5], [5]), ([5], [4]), ([1, 5], [3]), ([], [2, 1]), ([], [2, 2])],
    ids=["repeat", "below-last", "below-pending", "descending-batch", "duplicate-in-batch"],
)
def test_registering_out_of_order_raises(first: list[int], second: list[int]) -> None:
    tracker = OffsetTracker()
    tracker.register(first)
    with pytest.raises(ValueError, match="out of order"):
        tracker.register(second)


def test_registering_below_the_committable_mark_raises_once_everything_finished() -> None:
    tracker = OffsetTracker()
    tracker.register([4, 5])
    tracker.mark_done([4, 5])
    for offset in (0, 4, 5):
        with pytest.raises(ValueError, match="below the committable mark 6"):
            tracker.register([offset])
    tracker.register([6])
    assert tracker.in_flight == 1


# --- exhaustive -------------------------------------------------------------------


@pytest.mark.parametrize("registered", [[0], [0, 1, 2, 3], [2, 3, 7, 8, 15], [1, 5, 6, 40, 41, 42]])
def test_every_completion_order_of_every_subset(registered: list[int]) -> None:
    """Every permutation prefix: every subset finished in every order."""
    for order in itertools.permutations(registered):
        tracker = OffsetTracker()
        tracker.register(registered)
        done: set[int] = set()
        previous = None
        for offset in order:
            tracker.mark_done([offset])
            done.add(offset)
            committable = tracker.committable()
            assert committable == expected_committable(registered, done), order
            assert previous is None or committable >= previous
            previous = committable
        assert tracker.committable() == registered[-1] + 1
        assert tracker.in_flight == 0


# --- properties -------------------------------------------------------------------


@st.composite
def registrations_and_completions(draw: st.DrawFn) -> tuple[list[int], list[list[int]]]:
    """Increasing, gapped offsets; a random subset of them finished in random chunks."""
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=40))
    registered = gapped_offsets(gaps, start=draw(st.integers(0, 10**12)) - 1)
    finished = draw(st.permutations(registered))
    finished = finished[: draw(st.integers(0, len(finished)))]
    chunks, rest = [], finished
    while rest:
        size = draw(st.integers(1, len(rest)))
        chunks.append(rest[:size])
        rest = rest[size:]
    return registered, chunks


@given(registrations_and_completions())
def test_committable_is_the_finished_prefix_and_monotonic(
    case: tuple[list[int], list[list[int]]],
) -> None:
    registered, chunks = case
    tracker = OffsetTracker()
    tracker.register(registered)
    done: set[int] = set()
    previous = None
    for chunk in chunks:
        tracker.mark_done(chunk)
        done.update(chunk)
        committable = tracker.committable()
        assert committable == expected_committable(registered, done)
        unfinished = [o for o in registered if o not in done]
        if committable is not None and unfinished:
            assert committable <= min(unfinished)
        if previous is not None:
            assert committable is not None and committable >= previous
        previous = committable
        assert tracker.in_flight == len(registered) - sum(
            1 for o in registered if committable is not None and o < committable
        )


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=20))
def test_any_non_increasing_sequence_is_rejected(offsets: list[int]) -> None:
    tracker = OffsetTracker()
    increasing = all(a < b for a, b in itertools.pairwise(offsets))
    if increasing:
        tracker.register(offsets)
        assert tracker.in_flight == len(offsets)
    else:
        with pytest.raises(ValueError):
            tracker.register(offsets)


class TrackerMachine(RuleBasedStateMachine):
    """Registration batches interleaved with completions, as the listener does it."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.registered: list[int] = []
        self.done: set[int] = set()
        self.previous: int | None = None

    @rule(gaps=st.lists(st.integers(1, 4), min_size=1, max_size=8))
    def register_batch(self, gaps: list[int]) -> None:
        start = self.registered[-1] if self.registered else -1
        batch = gapped_offsets(gaps, start)
        self.tracker.register(batch)
        self.registered.extend(batch)

    @rule(offset=st.integers(0, 10**6))
    def register_too_low(self, offset: int) -> None:
        if self.registered and offset <= self.registered[-1]:
            with pytest.raises(ValueError):
                self.tracker.register([offset])

    @precondition(lambda self: len(self.done) < len(self.registered))
    @rule(data=st.data())
    def finish_some(self, data: st.DataObject) -> None:
        unfinished = [o for o in self.registered if o not in self.done]
        chunk = data.draw(st.lists(st.sampled_from(unfinished), min_size=1, unique=True))
        self.tracker.mark_done(chunk)
        self.done.update(chunk)

    @invariant()
    def matches_the_model(self) -> None:
        committable = self.tracker.committable()
        assert committable == expected_committable(self.registered, self.done)
        unfinished = [o for o in self.registered if o not in self.done]
        if committable is not None and unfinished:
            assert committable <= min(unfinished)
        if self.previous is not None:
            assert committable is not None and committable >= self.previous
        self.previous = committable


TestTrackerMachine = TrackerMachine.TestCase


def test_held_at_names_the_first_unfinished_offset_once_later_ones_finish() -> None:
    tracker = OffsetTracker()
    tracker.register([10, 11, 12])
    assert tracker.held_at() is None  # nothing finished: nothing to carry
    tracker.mark_done([12])
    assert tracker.committable() is None
    assert tracker.held_at() == 10
    tracker.mark_done([10])
    assert tracker.held_at() is None  # the mark moved: committable() takes over
    assert tracker.committable() == 11
