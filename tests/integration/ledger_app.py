"""A worker app for subprocess tests: every execution appends one row to the ledger.

The ledger is `tests/ledger.py`'s. Environment: LEDGER_TOPIC (topic of the job),
LEDGER_DIR (where the ledger is, and the `started-*` markers),
LEDGER_SLEEP (seconds each job sleeps, default 0), LEDGER_LONG_RUNNING (1: the
topic is long-running), LEDGER_VIRTUAL (1: virtual partitions), LEDGER_SLOW_KEY
(jobs of this key sleep LEDGER_SLOW_SECONDS instead).
"""

from __future__ import annotations

import os
import time

from kafka_jobs import App, Event, current_job
from tests import ledger

app = App(default_topic=os.environ.get("LEDGER_TOPIC", "ledger"))
_SLEEP = float(os.environ.get("LEDGER_SLEEP", "0"))
_SLOW_KEY = os.environ.get("LEDGER_SLOW_KEY")
_SLOW_SECONDS = float(os.environ.get("LEDGER_SLOW_SECONDS", "0"))
app.configure_topic(
    app.settings.default_topic,
    long_running=os.environ.get("LEDGER_LONG_RUNNING") == "1",
    virtual_partitions=os.environ.get("LEDGER_VIRTUAL") == "1",
    retries=1,  # virtual partitions with a dead-letter topic need one (the collapse re-run)
    backoff=0.1,
)
_ledger = ledger.Writer()  # in LEDGER_DIR


def _on_assignment(event: Event) -> None:
    if event.name in ("partitions.assigned", "partitions.revoked", "partitions.lost"):
        _ledger.event(event.name, event.payload.get("partitions"))


app.events.subscribe(_on_assignment)  # so tests can wait for a settled group


@app.job(key="key", name="ledger.record")
def record(seq: int, key: str) -> None:
    """Sleep if asked, then write one ledger row (its own transaction: kill -9 safe)."""
    job = current_job()
    sleep = _SLOW_SECONDS if key == _SLOW_KEY else _SLEEP
    if sleep:
        started = os.path.join(os.environ["LEDGER_DIR"], f"started-{seq}-{os.getpid()}")
        open(started, "w").close()
        time.sleep(sleep)
    _ledger.execution(seq, key, job.partition, job.offset)
