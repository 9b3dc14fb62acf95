"""A worker app for the chord crash test, run as `kafka-jobs worker -A` in a subprocess.

Environment: CHORD_MEMBERS_TOPIC (members), CHORD_CALLBACK_TOPIC (callback and
joins), CHORD_RESULTS (results topic), CHORD_RUNS (every callback run writes a
record there, before it returns), CHORD_DIR (members leave `started-N-PID`
files there), CHORD_SLEEP (seconds a member takes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kafka_jobs import App
from kafka_jobs.wire import new_job_id

app = App(
    default_topic=os.environ.get("CHORD_MEMBERS_TOPIC", "chord-members"),
    results_topic=os.environ.get("CHORD_RESULTS", "chord-results"),
    keep_result=True,
)
_SLEEP = float(os.environ.get("CHORD_SLEEP", "0"))


@app.job(name="chord.member", key="n")
def member(n: int) -> int:
    """Leave a marker, take a while, return n squared."""
    Path(os.environ["CHORD_DIR"], f"started-{n}-{os.getpid()}").touch()
    time.sleep(_SLEEP)
    return n * n


@app.job(name="chord.total", topic=os.environ.get("CHORD_CALLBACK_TOPIC", "chord-callback"))
def total(values: list[int]) -> int:
    """Write this run to the runs topic (acknowledged), then return the sum."""
    run = json.dumps({"pid": os.getpid(), "values": values}).encode()
    app.producer.enqueue(os.environ["CHORD_RUNS"], new_job_id(), run, None, []).wait(30)
    return sum(values)
