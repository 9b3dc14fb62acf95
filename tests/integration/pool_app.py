"""Jobs for the process-pool tests; imported by the test and by the pool's child processes.

Configured from the environment the test sets before importing it (children inherit it).
"""

from __future__ import annotations

import os
import signal

from kafka_jobs import App, current_job

app = App(default_topic=os.environ.get("POOL_TOPIC", "pool"))


def _note(line: str) -> None:
    # O_APPEND: lines from concurrent processes never interleave.
    fd = os.open(os.environ["POOL_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.job(key="n", retries=2, backoff=0.05)
def work(n: int, fate: str = "ok") -> int:
    """Runs in a child; `fate` says how its first attempt ends."""
    job = current_job()
    if job.attempt == 1 and fate == "exit":
        os._exit(1)
    if job.attempt == 1 and fate == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fate == "raise":
        raise LookupError(f"no row {n}")
    _note(f"{n} {job.attempt} {os.getpid()} {job.topic}:{job.partition}@{job.offset}")
    return n


@app.job(key="n", keep_result=True)
def square(n: int) -> dict[str, int]:
    """Its value comes back from the child to the worker, then through the results topic."""
    return {"n": n, "square": n * n, "pid": os.getpid()}
