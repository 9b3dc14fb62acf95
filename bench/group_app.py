"""The worker app of `bench/group_protocols.py`: a short job that notes each run in a ledger.

    python -m kafka_jobs worker -A bench.group_app -g GROUP

Environment (set by the benchmark; the group protocol comes from
``KAFKA_JOBS_GROUP_PROTOCOL`` like for any worker):

- ``BENCH_GROUP_TOPIC``: the topic of the job ``bench.group.work(seq, sent)``
- ``BENCH_GROUP_LEDGER``: the file every line below is appended to (one `os.write` each,
  O_APPEND, shared by every worker process of the run)
- ``BENCH_GROUP_JOB_SECONDS``: how long each job sleeps (default 0.005)

Ledger lines, times are `time.time()` (one machine, one clock):

- ``ready <pid> <time>``: the module was imported (the worker is about to start)
- ``assigned|revoked|lost <pid> <time> <p,p,...>``: a rebalance callback of the worker's
  consumer on the job topic (`partitions.assigned` / `.revoked` / `.lost` events), with
  the partitions it gave or took (``-`` for none)
- ``run <pid> <time> <seq> <sent>``: job `seq` started (`sent`: when it was enqueued)
"""

from __future__ import annotations

import os
import time

from kafka_jobs import App
from kafka_jobs.instrumentation.events import Event

TASK_NAME = "bench.group.work"
TOPIC = os.environ.get("BENCH_GROUP_TOPIC", "bench-group")
LEDGER = os.environ.get("BENCH_GROUP_LEDGER", "")
JOB_SECONDS = float(os.environ.get("BENCH_GROUP_JOB_SECONDS") or 0.005)

_fd: int | None = None


def note(*fields: object) -> None:
    """Append one line to the ledger (nothing without one)."""
    global _fd
    if not LEDGER:
        return
    if _fd is None:
        _fd = os.open(LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, (" ".join(str(f) for f in fields) + "\n").encode())


def on_event(event: Event) -> None:
    """Rebalance callbacks on the job topic go to the ledger."""
    kind = event.name.removeprefix("partitions.")
    if event.name.startswith("partitions.") and kind in ("assigned", "revoked", "lost"):
        mine = sorted(p for t, p in event.payload.get("partitions", []) if t == TOPIC)
        note(kind, os.getpid(), f"{time.time():.6f}", ",".join(map(str, mine)) or "-")


def work(seq: int, sent: float) -> None:
    """The job: note that it started, then take JOB_SECONDS."""
    note("run", os.getpid(), f"{time.time():.6f}", seq, f"{sent:.6f}")
    time.sleep(JOB_SECONDS)


note("ready", os.getpid(), f"{time.time():.6f}")
app = App()
app.events.subscribe(on_event)
app.job(topic=TOPIC, name=TASK_NAME)(work)
