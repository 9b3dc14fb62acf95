"""The pause table: due times, offsets to fetch from, drops (pure, no broker)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.connection.pauses import FOREVER, PauseTracker


def test_a_pause_ends_at_its_time_with_its_offset() -> None:
    pauses = PauseTracker()
    assert pauses.pause(("t", 0), 5.0, 42)
    assert pauses.due(4.9) == []
    assert ("t", 0) in pauses
    assert pauses.due(5.0) == [(("t", 0), 42)]
    assert ("t", 0) not in pauses


def test_pausing_again_moves_the_time_and_offset_without_a_second_pause() -> None:
    pauses = PauseTracker()
    assert pauses.pause(("t", 0), FOREVER, -1)
    assert not pauses.pause(("t", 0), 1.0, 7)  # the client is already paused
    assert pauses.due(2.0) == [(("t", 0), 7)]


def test_forever_waits_until_dropped() -> None:
    pauses = PauseTracker()
    pauses.pause(("t", 1), FOREVER, -1)
    assert pauses.due(1e18) == []
    assert pauses.drop(("t", 1))
    assert not pauses.drop(("t", 1))
    assert len(pauses) == 0


@given(
    st.dictionaries(
        st.tuples(st.sampled_from("abc"), st.integers(0, 5)),
        st.tuples(st.floats(0, 100), st.integers(0, 1000)),
        max_size=12,
    ),
    st.floats(0, 100),
)
def test_due_takes_exactly_the_pauses_whose_time_came(
    table: dict[tuple[str, int], tuple[float, int]], now: float
) -> None:
    pauses = PauseTracker()
    for key, (until, offset) in table.items():
        pauses.pause(key, until, offset)
    due = dict(pauses.due(now))
    assert due == {key: offset for key, (until, offset) in table.items() if until <= now}
    assert set(pauses) == {key for key, (until, _) in table.items() if until > now}
