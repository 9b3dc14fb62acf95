"""Celery's own test worker (`start_worker`) on kafkajobs:// with Celery's defaults.

Run as `python -m tests.bridge.startup_check BOOTSTRAP`: exits 0 once the worker
answered `start_worker`'s start-up ping (Celery waits 10 s for it) and ran a task,
1 with the error otherwise. Only the URL, a result backend and names unique to
this run are set: no group timeouts.
"""

from __future__ import annotations

import sys
import time
import uuid

import celery.contrib.testing.tasks  # noqa: F401  (celery.ping, which start_worker sends)
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_bridge  # noqa: F401  (registers kafkajobs://)


def main(bootstrap: str) -> int:
    """Start Celery's test worker with default settings; 0 when it answered in time."""
    app = Celery("startup_check")
    app.conf.update(
        broker_url=f"kafkajobs://{bootstrap}",
        result_backend="cache+memory://",
        task_default_queue=f"startup-{uuid.uuid4().hex[:10]}",
        broker_transport_options={"group_id": f"startup-{uuid.uuid4().hex[:10]}"},
    )

    @app.task(name="startup.add")
    def add(x: int, y: int) -> int:
        return x + y

    started = time.monotonic()
    try:
        with start_worker(app, pool="solo", shutdown_timeout=30):
            print(f"start_worker returned after {time.monotonic() - started:.1f} s", flush=True)
            assert add.delay(2, 3).get(timeout=30) == 5
    except Exception as exc:  # reported to the test through the exit code
        print(f"failed after {time.monotonic() - started:.1f} s: {exc!r}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
