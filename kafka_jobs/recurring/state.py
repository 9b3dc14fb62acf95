"""The records of a schedules topic: per schedule its state, and the operators' commands.

One compacted, single-partition topic per worker group, `<group>.schedules`:

- key ``state:<name>``: JSON ``{"v": 1, "last": ms, "fired": ms, "fired_at": ms,
  "paused": bool, "command": offset}``: the last fire time handled (enqueued, or
  dropped by the misfire policy), the last one enqueued and when, whether it is
  paused, and the offset of the last command applied. Written by the leader only.
- key ``command:<name>``: JSON ``{"v": 1, "op": "pause" | "resume" | "trigger",
  "at": ms}``: written by `kafka-jobs schedule`; the leader applies a command once,
  the first time it sees it with an offset above the state's ``command``.

Pure encoding and decoding; malformed records decode to None (never raise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Op = Literal["pause", "resume", "trigger"]
OPS: tuple[Op, ...] = ("pause", "resume", "trigger")

_STATE = "state:"
_COMMAND = "command:"
_VERSION = 1


def schedules_topic(group_id: str) -> str:
    """The schedules topic of a worker group."""
    return f"{group_id}.schedules"


def leader_group(group_id: str) -> str:
    """The consumer group whose owner of partition 0 leads a worker group's schedules."""
    return f"{group_id}.recurring"


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the schedules topic keeps for one schedule (all times epoch ms)."""

    last: int | None = None
    fired: int | None = None
    fired_at: int | None = None
    paused: bool = False
    command: int = -1

    def encode(self) -> bytes:
        """The record value."""
        return json.dumps(
            {
                "v": _VERSION,
                "last": self.last,
                "fired": self.fired,
                "fired_at": self.fired_at,
                "paused": self.paused,
                "command": self.command,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> ScheduleState | None:
        """A state from a record value; None when it is not one this version wrote."""
        data = _object(value)
        if data is None:
            return None
        times = [data.get("last"), data.get("fired"), data.get("fired_at")]
        paused, command = data.get("paused", False), data.get("command", -1)
        last, fired, fired_at = [v if isinstance(v, int) and not isinstance(v, bool) else None
                                 for v in times]  # fmt: skip
        if [last, fired, fired_at] != times or not isinstance(paused, bool):
            return None
        if not isinstance(command, int) or isinstance(command, bool):
            return None
        return cls(last, fired, fired_at, paused, command)


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's command for one schedule."""

    op: Op
    at: int

    def encode(self) -> bytes:
        """The record value."""
        return json.dumps({"v": _VERSION, "op": self.op, "at": self.at}).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Command | None:
        """A command from a record value; None when malformed or of an unknown op."""
        data = _object(value)
        if data is None:
            return None
        op, at = data.get("op"), data.get("at")
        if op not in OPS or not isinstance(at, int) or isinstance(at, bool):
            return None
        return cls(op, at)


def state_key(name: str) -> bytes:
    """Record key of a schedule's state."""
    return (_STATE + name).encode()


def command_key(name: str) -> bytes:
    """Record key of a schedule's commands (compaction keeps the newest)."""
    return (_COMMAND + name).encode()


def parse_key(key: bytes | None) -> tuple[Literal["state", "command"], str] | None:
    """("state" | "command", schedule name) of a record key; None for anything else."""
    if not key:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    if text.startswith(_STATE) and len(text) > len(_STATE):
        return "state", text[len(_STATE) :]
    if text.startswith(_COMMAND) and len(text) > len(_COMMAND):
        return "command", text[len(_COMMAND) :]
    return None


def _object(value: bytes | None) -> dict[str, object] | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("v") != _VERSION:
        return None
    return data
