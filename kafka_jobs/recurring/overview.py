"""What the CLI and the dashboard show of a group's schedules: paused, last and next run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from kafka_jobs.recurring.state import ScheduleState, schedules_topic
from kafka_jobs.recurring.topic import Snapshot, read
from kafka_jobs.wire import now_ms

if TYPE_CHECKING:
    from kafka_jobs.app import App


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One schedule as listed (times in epoch ms; None: never / not known)."""

    name: str
    task: str | None
    """None: the schedule has a state in the topic but this app does not declare it."""
    when: str
    paused: bool
    last_fire_ms: int | None
    """The last fire time enqueued."""
    last_run_ms: int | None
    """When the leader enqueued it (or the last trigger)."""
    next_ms: int | None
    """The next fire time (None while paused); in the past when no leader runs."""
    misfire: str | None
    pending_commands: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


def rows(app: App, snapshot: Snapshot, at_ms: int) -> list[ScheduleRow]:
    """The app's declared schedules, then states of schedules it does not declare."""
    pending: dict[str, int] = {}
    for _, name, _ in snapshot.pending():
        pending[name] = pending.get(name, 0) + 1
    listed = []
    for name, schedule in app.schedules.items():
        state = snapshot.states.get(name, ScheduleState())
        start = state.last if state.last is not None else at_ms
        listed.append(
            ScheduleRow(
                name=name,
                task=schedule.task,
                when=schedule.describe,
                paused=state.paused,
                last_fire_ms=state.fired,
                last_run_ms=state.fired_at,
                next_ms=None if state.paused else schedule.next_after(start),
                misfire=schedule.misfire,
                pending_commands=pending.get(name, 0),
            )
        )
    for name, state in sorted(snapshot.states.items()):
        if name not in app.schedules:
            listed.append(
                ScheduleRow(
                    name, None, "(not declared here)", state.paused, state.fired,
                    state.fired_at, None, None, pending.get(name, 0),
                )
            )  # fmt: skip
    return listed


def read_rows(app: App, group_id: str | None = None, timeout: float = 10.0) -> list[ScheduleRow]:
    """Read the group's schedules topic (default: the app's `group_id`) and list it."""
    group = group_id or app.settings.group_id
    snapshot = read(app.settings.consumer_settings(), schedules_topic(group), timeout)
    return rows(app, snapshot, now_ms())
