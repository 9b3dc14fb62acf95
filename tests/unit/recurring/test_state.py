"""Records of the schedules topic: state and command encoding, keys, the snapshot fold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.recurring.state import (
    Command,
    ScheduleState,
    command_key,
    leader_group,
    parse_key,
    schedules_topic,
    state_key,
)
from kafka_jobs.recurring.topic import Snapshot

times = st.one_of(st.none(), st.integers(min_value=0, max_value=2**53))


@given(last=times, fired=times, fired_at=times, paused=st.booleans(),
       command=st.integers(min_value=-1, max_value=2**53))  # fmt: skip
def test_states_round_trip(last, fired, fired_at, paused, command) -> None:
    state = ScheduleState(last, fired, fired_at, paused, command)
    assert ScheduleState.decode(state.encode()) == state


@given(op=st.sampled_from(["pause", "resume", "trigger"]), at=st.integers(0, 2**53))
def test_commands_round_trip(op, at) -> None:
    assert Command.decode(Command(op, at).encode()) == Command(op, at)


@pytest.mark.parametrize(
    "value",
    [
        None, b"", b"not json", b"[]", b'{"v": 2, "last": 1}', b'{"v": 1, "last": "1"}',
        b'{"v": 1, "last": true}', b'{"v": 1, "paused": "yes"}', b'{"v": 1, "command": null}',
        b"\xff\xfe",
    ],
)  # fmt: skip
def test_malformed_states_decode_to_none(value) -> None:
    assert ScheduleState.decode(value) is None


@pytest.mark.parametrize(
    "value",
    [None, b'{"v": 1, "op": "delete", "at": 1}', b'{"v": 1, "op": "pause"}', b'{"op": "pause"}'],
)
def test_malformed_commands_decode_to_none(value) -> None:
    assert Command.decode(value) is None


def test_keys_and_names() -> None:
    assert parse_key(state_key("a:b")) == ("state", "a:b")
    assert parse_key(command_key("n")) == ("command", "n")
    for key in (None, b"", b"state:", b"other:x", b"\xff"):
        assert parse_key(key) is None
    assert schedules_topic("g") == "g.schedules" and leader_group("g") == "g.recurring"


class _Record:
    def __init__(self, offset: int, key: bytes, value: bytes | None) -> None:
        self._offset, self._key, self._value = offset, key, value

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def test_the_snapshot_keeps_the_newest_state_and_the_commands_not_applied() -> None:
    snapshot = Snapshot()
    records = [
        _Record(0, command_key("a"), Command("pause", 1).encode()),
        _Record(1, state_key("a"), ScheduleState(last=5, paused=True, command=0).encode()),
        _Record(2, command_key("a"), Command("resume", 2).encode()),
        _Record(3, state_key("b"), ScheduleState(last=7).encode()),
        _Record(4, state_key("b"), None),  # tombstone
        _Record(5, b"junk", b"{}"),
        _Record(6, command_key("c"), json.dumps({"v": 1, "op": "x", "at": 1}).encode()),
    ]
    for record in records:
        snapshot.add(record)  # type: ignore[arg-type]
    assert snapshot.states == {"a": ScheduleState(last=5, paused=True, command=0)}
    assert snapshot.pending() == [(2, "a", Command("resume", 2))]
