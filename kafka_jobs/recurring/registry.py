"""An app's declared schedules, and the leader a worker runs for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kafka_jobs.errors import ConfigurationError
from kafka_jobs.recurring.schedule import DEFAULT_MISFIRE_GRACE, Schedule
from kafka_jobs.wire import encode_value

if TYPE_CHECKING:
    from kafka_jobs.recurring.leader import Leader
    from kafka_jobs.task import Task
    from kafka_jobs.worker.runner import Worker


class Schedules(Mapping[str, Schedule]):
    """Name -> schedule, in declaration order. Declare at import time (not thread-safe)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}

    def declare(
        self,
        job: Task[Any, Any] | str,
        *,
        every: float | None = None,
        cron: str | None = None,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        misfire: str = "once",
        misfire_grace: float = DEFAULT_MISFIRE_GRACE,
    ) -> Schedule:
        """Check and add one schedule (see `App.recurring`); `ConfigurationError` if invalid."""
        task = job if isinstance(job, str) else job.name
        if not task:
            raise ConfigurationError(f"recurring needs a job or a task name, got {job!r}")
        schedule = Schedule.build(
            name or task, task, every=every, cron=cron, args=args, kwargs=kwargs,
            timezone=timezone, misfire=misfire, misfire_grace=misfire_grace,
        )  # fmt: skip
        if schedule.name in self._by_name:
            raise ConfigurationError(
                f"a schedule named {schedule.name!r} is already declared; pass name="
            )
        try:
            encode_value(schedule.args, schedule.kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"schedule {schedule.name!r}: {exc}") from exc
        self._by_name[schedule.name] = schedule
        return schedule

    def leader(self, worker: Worker, on_crash: Callable[[BaseException], None]) -> Leader | None:
        """The leader thread (not started) a worker runs, or None without schedules."""
        if not self._by_name:
            return None
        from kafka_jobs.recurring.leader import Leader

        return Leader(worker.app, self._by_name, worker.group_id, worker.stopping, on_crash)

    def __getitem__(self, name: str) -> Schedule:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
