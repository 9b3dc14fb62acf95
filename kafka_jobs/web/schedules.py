"""The dashboard's schedules: the app's recurring jobs with their last and next run.

Read from the worker group's schedules topic (`kafka_jobs.recurring`), read to its
end once per request at most every `max_age` seconds; a failed read is shown as
its error. The group is the app's `group_id` unless the dashboard names another.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka_jobs.app import App
from kafka_jobs.recurring.overview import ScheduleRow, read_rows
from kafka_jobs.recurring.state import schedules_topic

log = logging.getLogger("kafka_jobs.web")


@dataclass(frozen=True, slots=True)
class SchedulesView:
    """One read of a group's schedules."""

    group: str
    topic: str
    rows: list[ScheduleRow] = field(default_factory=list)
    at: float = field(default_factory=time.time)
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (`/api/schedules`)."""
        return {
            "group": self.group,
            "topic": self.topic,
            "read_at": self.at,
            "error": self.error,
            "schedules": [row.as_dict() for row in self.rows],
        }


class SchedulesCache:
    """Shares one read among the requests of `max_age` seconds. Thread-safe."""

    def __init__(self, app: App, group: str | None = None, max_age: float = 2.0) -> None:
        self.app = app
        self.group = group or app.settings.group_id
        self.max_age = max_age
        self._lock = threading.Lock()
        self._latest: SchedulesView | None = None

    def get(self) -> SchedulesView:
        """A read at most `max_age` old."""
        with self._lock:  # concurrent requests wait for one read instead of each reading
            latest = self._latest
            if latest is not None and time.time() - latest.at < self.max_age:
                return latest
            topic = schedules_topic(self.group)
            try:
                latest = SchedulesView(self.group, topic, read_rows(self.app, self.group))
            except Exception as exc:  # the broker away: say so on the page
                log.warning("dashboard could not read the schedules topic: %s", exc)
                latest = SchedulesView(self.group, topic, error=str(exc))
            self._latest = latest
            return latest
