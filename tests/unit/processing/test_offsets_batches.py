"""OffsetTracker's batch paths (whole batches registered, in-order prefixes marked done)
behave exactly as one offset at a time: a differential test against a plain model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kafka_jobs.processing.offsets import OffsetTracker


class Model:
    """The tracker's rules, one offset at a time, with no shortcut."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.done: set[int] = set()
        self.next: int | None = None

    def register(self, offsets: list[int]) -> None:
        for offset in offsets:
            self.pending.append(offset)
        self.advance()

    def mark_done(self, offsets: list[int]) -> None:
        self.done.update(offsets)
        self.advance()

    def advance(self) -> None:
        while self.pending and self.pending[0] in self.done:
            offset = self.pending.pop(0)
            self.done.discard(offset)
            self.next = offset + 1

    def rewind(self, offset: int) -> None:
        self.pending = [o for o in self.pending if o < offset]
        if self.next is not None and self.next > offset:
            self.next = offset

    def held_at(self) -> int | None:
        if self.next is None and self.done and self.pending:
            return self.pending[0]
        return None


class BatchMachine(RuleBasedStateMachine):
    """Batches registered and finished the way the listener and its jobs do it."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.model = Model()

    @rule(gaps=st.lists(st.integers(1, 3), min_size=1, max_size=12))
    def register_batch(self, gaps: list[int]) -> None:
        # Above what is pending, else at or above the mark: after a rewind this hands
        # out again offsets known done, as a re-fetch does.
        model = self.model
        if model.pending:
            floor = model.pending[-1]
        else:
            floor = model.next - 1 if model.next is not None else -1
        batch, offset = [], floor
        for gap in gaps:
            offset += gap
            batch.append(offset)
        self.tracker.register(batch)
        self.model.register(batch)

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def finish_in_order(self, data: st.DataObject) -> None:
        """A job's records, done in order from the first unfinished one."""
        unfinished = [o for o in self.model.pending if o not in self.model.done]
        count = data.draw(st.integers(1, len(unfinished)))
        chunk = unfinished[:count]
        self.tracker.mark_done(chunk)
        self.model.mark_done(chunk)

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def finish_any(self, data: st.DataObject) -> None:
        """Lanes: any unfinished offsets, in any order."""
        unfinished = [o for o in self.model.pending if o not in self.model.done]
        if not unfinished:
            return
        chunk = data.draw(st.lists(st.sampled_from(unfinished), min_size=1, unique=True))
        self.tracker.mark_done(chunk)
        self.model.mark_done(chunk)

    @rule(offsets=st.lists(st.integers(0, 60), max_size=4))
    def finished_elsewhere(self, offsets: list[int]) -> None:
        """Commit metadata: offsets a former owner finished, registered or not."""
        self.tracker.mark_done(offsets)
        self.model.mark_done(offsets)

    @precondition(lambda self: self.model.pending)
    @rule(data=st.data())
    def rewind(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from(self.model.pending))
        self.tracker.rewind(offset)
        self.model.rewind(offset)

    @invariant()
    def agrees_with_the_model(self) -> None:
        tracker, model = self.tracker, self.model
        assert tracker.committable() == model.next
        assert tracker.in_flight == len(model.pending)
        assert tracker.last_registered == (model.pending[-1] if model.pending else None)
        assert tracker.held_at() == model.held_at()
        assert tracker.done_above() == model.done
        assert tracker.any_done_above == bool(model.done)
        for offset in [*model.pending, *model.done]:
            expected = (model.next is not None and offset < model.next) or offset in model.done
            assert tracker.is_done(offset) == expected


TestBatchMachine = BatchMachine.TestCase
TestBatchMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def test_a_job_finished_in_order_moves_the_mark_past_it() -> None:
    tracker = OffsetTracker()
    tracker.register([10, 11, 12, 13])
    tracker.mark_done([10, 11])
    assert tracker.committable() == 12
    assert tracker.in_flight == 2
    tracker.mark_done([12, 13])
    assert tracker.committable() == 14
    assert tracker.in_flight == 0
    assert not tracker.any_done_above


def test_an_in_order_chunk_that_is_not_the_prefix_waits_for_the_first() -> None:
    tracker = OffsetTracker()
    tracker.register([1, 2, 3, 4])
    tracker.mark_done([2, 3])
    assert tracker.committable() is None
    assert tracker.any_done_above
    tracker.mark_done([1])
    assert tracker.committable() == 4


@given(st.lists(st.integers(0, 50), min_size=2, max_size=12))
def test_a_rejected_batch_registers_nothing(offsets: list[int]) -> None:
    tracker = OffsetTracker()
    tracker.register([100])
    strictly_increasing = all(a < b for a, b in itertools.pairwise(offsets))
    shifted = [o + 101 for o in offsets]
    if strictly_increasing:
        tracker.register(shifted)
        assert tracker.in_flight == 1 + len(offsets)
    else:
        with pytest.raises(ValueError, match="out of order"):
            tracker.register(shifted)
        assert tracker.in_flight == 1
        assert tracker.last_registered == 100


def test_register_takes_any_iterable() -> None:
    tracker = OffsetTracker()
    tracker.register(iter([5, 6]))
    tracker.register(())
    assert tracker.last_registered == 6
    tracker.mark_done((5, 6))
    assert tracker.committable() == 7
