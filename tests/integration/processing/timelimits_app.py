"""Jobs for the process-pool time-limit tests; imported by the test and by the pool's children.

Configured from the environment the test sets before importing it (children inherit it).
"""

from __future__ import annotations

import os
import time

from kafka_jobs import App, SoftTimeLimitExceeded, current_job

app = App(default_topic=os.environ.get("LIMITS_TOPIC", "limits"))


def note(line: str) -> None:
    """Append a line to the test's ledger (O_APPEND: lines of processes never interleave)."""
    fd = os.open(os.environ["LIMITS_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.job(soft_time_limit=0.5, time_limit=30)
def cleans_up(n: int) -> None:
    """Works in small steps until its soft limit; then cleans up and returns."""
    try:
        for _ in range(600):  # at most 30 s
            time.sleep(0.05)
        note(f"finished {n} {os.getpid()}")
    except SoftTimeLimitExceeded:
        note(f"cleaned {n} {os.getpid()}")


@app.job(time_limit=1, retries=0)
def stuck(n: int) -> None:
    """Blocks in one long C call: only killing the child ends it."""
    note(f"stuck {n} {os.getpid()}")
    time.sleep(3600)


@app.job
def quick(n: int) -> None:
    """Notes where it ran."""
    job = current_job()
    note(f"quick {n} {os.getpid()} {job.offset}")


@app.job
def hangs(n: int) -> None:
    """No limit of its own: the worker's --time-limit ends it (a thread job here)."""
    note(f"hangs {n} {os.getpid()}")
    time.sleep(3600)


@app.job(retries=3, backoff=0.05)
def spins(n: int) -> None:
    """Runs until it is ended (at most 60 s), in small steps."""
    note(f"spins {n} {os.getpid()}")
    for _ in range(1200):
        time.sleep(0.05)
    note(f"spun {n} {os.getpid()}")
