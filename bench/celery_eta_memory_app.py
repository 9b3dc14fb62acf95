"""The Celery app of `bench/celery_eta_memory.py`: one task that notes when it ran.

Celery's defaults but for three settings read from the environment:

- ``ETA_MEMORY_BROKER``: the broker URL (``kafkajobs://HOST:PORT`` or ``redis://...``),
  nothing else (no transport options);
- ``ETA_MEMORY_QUEUE``: `task_default_queue` (a fresh queue per run);
- ``ETA_MEMORY_MARKS``: the file each execution appends ``mark unix-time pid`` to, in one write.
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped]

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)

TASK_NAME = "bench.celery_eta_memory.mark"

app = Celery("eta_memory", broker=os.environ.get("ETA_MEMORY_BROKER", "kafkajobs://"))
app.conf.task_default_queue = os.environ.get("ETA_MEMORY_QUEUE", "celery")
_fd: int | None = None


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def mark(name: str) -> None:
    """Append one line: the benchmark counts executions and reads when each ran."""
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["ETA_MEMORY_MARKS"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{name} {time.time():.6f} {os.getpid()}\n".encode())
