"""The no-op job of `bench/processes.py`, for `kafka-jobs worker -A bench.processes_app`.

Each worker process counts its runs of `bench.noop` in memory and, every 0.1 s
and at exit, rewrites ``<BENCH_PROCESSES_DIR>/<pid>.json`` with its count and
the `time.monotonic()` of its first and latest run (one clock for every
process of the machine). No per-job I/O, so the job stays a no-op.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time

from kafka_jobs import App

TASK_NAME = "bench.noop"
_DIR = os.environ.get("BENCH_PROCESSES_DIR", "")
app = App(default_topic=os.environ.get("BENCH_PROCESSES_TOPIC", "bench-processes"))
_lock = threading.Lock()
_state = {"count": 0, "first": 0.0, "last": 0.0}


@app.job(key="key", name=TASK_NAME)
def noop(i: int, key: str) -> None:
    """Count the run (the benchmark's no-op job)."""
    now = time.monotonic()
    with _lock:
        if not _state["count"]:
            _state["first"] = now
        _state["count"] += 1
        _state["last"] = now


def _write() -> None:
    if not _DIR:
        return
    with _lock:
        data = json.dumps(_state)
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as out:
        out.write(data)
    os.replace(path + ".tmp", path)  # readers never see half a file


def _report_forever() -> None:
    while True:
        time.sleep(0.1)
        _write()


threading.Thread(target=_report_forever, name="bench-report", daemon=True).start()
atexit.register(_write)
