"""A worker app for the kill -9 test of re-enqueued retries (tests/integration/processing).

`requeue.step` writes a ledger event ("run", seq and attempt) on every run and an
execution row when it succeeds; job 0's first attempt raises `Retry(countdown=4)`.
Environment: REQUEUE_TOPIC (the jobs' topic) and LEDGER_DIR (the ledger).
"""

from __future__ import annotations

import os

from kafka_jobs import App, Retry, current_job
from tests import ledger

app = App(default_topic=os.environ.get("REQUEUE_TOPIC", "requeue"))
_ledger = ledger.Writer()


@app.job(key="key", name="requeue.step")
def step(seq: int, key: str) -> None:
    """Record the run; job 0's first attempt asks to be retried in 4 s."""
    job = current_job()
    _ledger.event("run", {"seq": seq, "attempt": job.attempt})
    if seq == 0 and job.attempt == 1:
        raise Retry(countdown=4)
    _ledger.execution(seq, key, job.partition, job.offset)
