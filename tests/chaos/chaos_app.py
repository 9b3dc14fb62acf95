"""The worker app of the chaos scenarios: each run and each partition event goes to the ledger.

`chaos.doomed` always fails: after its retry it lands in the topic's dead-letter topic.

Environment: CHAOS_TOPIC, LEDGER_DIR (where the ledger is, see `tests/ledger.py`),
CHAOS_SLEEP (seconds per job), CHAOS_VIRTUAL / CHAOS_LONG_RUNNING (1 to enable).
"""

from __future__ import annotations

import os
import time

from kafka_jobs import App, current_job
from kafka_jobs.instrumentation.events import Event
from tests import ledger

app = App(default_topic=os.environ.get("CHAOS_TOPIC", "chaos"))
app.configure_topic(
    app.settings.default_topic,
    virtual_partitions=os.environ.get("CHAOS_VIRTUAL") == "1",
    long_running=os.environ.get("CHAOS_LONG_RUNNING") == "1",
    retries=1,  # virtual partitions with a dead-letter topic need one (the collapse re-run)
    backoff=0.1,
)
_SLEEP = float(os.environ.get("CHAOS_SLEEP", "0"))
_ledger = ledger.Writer()  # in LEDGER_DIR


def _on_event(event: Event) -> None:
    if event.name in ("partitions.assigned", "partitions.revoked", "partitions.lost"):
        _ledger.event(event.name, event.payload.get("partitions"))
    elif event.name == "offsets.committed":
        _ledger.event(event.name, event.payload.get("offsets"))


app.events.subscribe(_on_event)


@app.job(key="key", name="chaos.record")
def record(seq: int, key: str) -> None:
    """Sleep, then write one ledger row."""
    if _SLEEP:
        time.sleep(_SLEEP)
    job = current_job()
    _ledger.execution(seq, key, job.partition, job.offset)


@app.job(key="key", name="chaos.doomed")
def doomed(seq: int, key: str) -> None:
    """Fail every attempt, so the job ends in the dead-letter topic (no ledger row)."""
    raise RuntimeError(f"chaos: job {seq} fails for good")
