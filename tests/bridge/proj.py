"""The Celery project of the bridge tests, for in-process and subprocess workers.

A subprocess worker (`celery -A tests.bridge.proj worker`) reads its settings from
the environment: ``PROJ_CONFIG`` (JSON of Celery settings), ``PROJ_LEDGER`` (a
file each `record` run appends ``<seq> <pid>`` to) and ``PROJ_BIG_SETTING`` (the
length of a setting that makes `inspect conf` replies large).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (celery.ping, for the test worker's check)
from celery import Celery, current_task
from celery.exceptions import Reject

import celery_bridge  # noqa: F401  (registers kafkajobs://)

app = Celery("proj")
app.conf.update(json.loads(os.environ.get("PROJ_CONFIG", "{}")))
if os.environ.get("PROJ_BIG_SETTING"):  # a large `inspect conf` reply (too big for an env var)
    app.conf.proj_big_setting = "x" * int(os.environ["PROJ_BIG_SETTING"])

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


@app.task(name="proj.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="proj.xsum")
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="proj.where")
def where() -> dict[str, Any]:
    """Which queue delivered this task, and when it ran."""
    info = current_task.request.delivery_info or {}
    return {"routing_key": info.get("routing_key"), "ran_at": time.time()}


@app.task(bind=True, name="proj.flaky", max_retries=5)
def flaky(self: Any, key: str, failures: int) -> int:
    """Fails `failures` times (retrying 0.2 s later each time), then returns its run count."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        runs = _attempts[key]
    if runs <= failures:
        raise self.retry(countdown=0.2)
    return runs


@app.task(name="proj.reject_once", acks_late=True)
def reject_once(key: str) -> int:
    """Rejects its message with requeue on the first run; returns the run count."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        runs = _attempts[key]
    if runs == 1:
        raise Reject("first run: requeue", requeue=True)
    return runs


@app.task(name="proj.record", acks_late=True, ignore_result=True)
def record(seq: int, sleep: float = 0.0) -> None:
    """Sleep, then append ``<seq> <pid>`` to the ledger file.

    A run that sleeps first appends ``<seq>`` to the ledger's ``.started`` file.
    """
    if sleep:
        _append(os.environ["PROJ_LEDGER"] + ".started", f"{seq}\n")
    time.sleep(sleep)
    _append(os.environ["PROJ_LEDGER"], f"{seq} {os.getpid()}\n")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write per line: appends from threads never interleave
    finally:
        os.close(fd)


@app.task(name="proj.record_early", ignore_result=True)
def record_early(seq: int, sleep: float = 0.0) -> None:
    """`record` acknowledged when a worker starts it (Celery's default), not when it ends."""
    record(seq, sleep)
