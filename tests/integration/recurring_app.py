"""A worker app for the recurring-jobs tests: every run of the schedule's job is a ledger row.

Environment: RECURRING_TOPIC (the job's topic), LEDGER_DIR (the ledger),
RECURRING_EVERY (seconds, default 1), RECURRING_GHOST (1: also declare a
schedule of a job no worker registers). Rows: seq is the fire time in ms (for a
trigger, minus the command's offset), key the job id. The leader's `schedule.*`
events are ledger events, so tests see who leads.
"""

from __future__ import annotations

import os

from kafka_jobs import App, Event, current_job
from tests import ledger

app = App(default_topic=os.environ.get("RECURRING_TOPIC", "recurring"))
_ledger = ledger.Writer()  # in LEDGER_DIR


def _on_schedule_event(event: Event) -> None:
    if event.name.startswith("schedule."):
        _ledger.event(event.name, event.payload)


app.events.subscribe(_on_schedule_event)


@app.job(name="recurring.tick")
def tick(label: str) -> None:
    """Record this run with its fire time (read from the job id the leader gave it)."""
    job = current_job()
    parts = job.job_id.split(":")  # recurring:<name>:<fire ms> | recurring:<name>:trigger:<n>
    seq = -int(parts[-1]) if parts[-2] == "trigger" else int(parts[-1])
    _ledger.execution(seq, job.job_id, job.partition, job.offset)


app.recurring(tick, every=float(os.environ.get("RECURRING_EVERY", "1")), args=("t",), name="tick")
if os.environ.get("RECURRING_GHOST") == "1":
    app.recurring("recurring.not_registered", every=1, name="ghost")
