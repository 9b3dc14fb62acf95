"""The worker app of `bench/delayed_memory.py`: one no-op job that notes when it ran.

Environment: DELAYED_MEMORY_TOPIC (topic of the job), DELAYED_MEMORY_MARKS (file
each execution appends `mark unix-time pid` to, in one write).
"""

from __future__ import annotations

import os
import time

from kafka_jobs import App

TASK_NAME = "bench.delayed_memory.noop"

app = App(default_topic=os.environ.get("DELAYED_MEMORY_TOPIC", "delayed-memory"))
_fd: int | None = None


def _marks() -> int:
    global _fd
    if _fd is None:
        path = os.environ["DELAYED_MEMORY_MARKS"]
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _fd


@app.job(name=TASK_NAME)
def noop(mark: str) -> None:
    """Append one line: the benchmark counts executions and reads when each ran."""
    os.write(_marks(), f"{mark} {time.time():.6f} {os.getpid()}\n".encode())
