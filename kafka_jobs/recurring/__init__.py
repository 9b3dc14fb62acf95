"""Recurring jobs, fired once per cluster: `App.recurring(job, every=... | cron=...)`.

`schedule` (when a schedule fires, the misfire policy), `state` (the records of
the schedules topic), `leader` (the worker thread that leads through Kafka),
`topic` (reading and commanding the topic from the CLI and the dashboard),
`registry` (an app's declared schedules).
"""

from kafka_jobs.recurring.registry import Schedules
from kafka_jobs.recurring.schedule import Schedule
from kafka_jobs.recurring.state import ScheduleState

__all__ = ["Schedule", "ScheduleState", "Schedules"]
