"""A prefork worker on kafkajobs:// whose children are all busy (`celery_bridge.feeding`).

Without Celery's event loop its consumer blocked in the pool's put until a child was
free, and answered no remote control meanwhile. The put now waits on a feeder thread:

* ``inspect ping`` / ``inspect active`` answer within Celery's 1 s while the only
  child is busy and tasks wait for it;
* a task that expires while waiting for a child is not run (Celery checks expiry when
  a child is free, as with the put lock: turning it off made Celery check it on
  receipt, and Celery's own ``test_expired`` failed);
* a task waiting for a child is not acknowledged: after a kill -9 another worker runs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kafka_jobs.testing import wait_until
from tests.bridge.conftest import WorkerProcesses

PREFORK_1 = ("-P", "prefork", "-c", "1", "--without-mingle", "--without-gossip")


def _ready(workers: WorkerProcesses, name: str) -> str:
    """Start a prefork -c 1 worker and wait until its group runs a task."""
    worker = f"{name}@{socket.gethostname()}"
    workers.start(name, *PREFORK_1)
    app = workers.app()
    assert wait_until(lambda: bool(app.control.ping([worker], timeout=1.0)), 60), workers.log(name)
    app.send_task("proj.record", (100,))  # the group has its partitions once it ran
    assert wait_until(lambda: 100 in workers.executions(), 60), workers.log(name)[-3000:]
    return worker


def test_remote_control_answers_while_every_child_is_busy(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    worker = _ready(workers, "busy")
    app = workers.app()
    ids = [app.send_task("proj.record", (seq, 2.0)).id for seq in range(4)]
    assert wait_until(lambda: 0 in workers.started(), 30), workers.log("busy")[-3000:]
    inspect = app.control.inspect([worker])  # Celery's default timeout: 1 s
    for attempt in range(5):
        assert inspect.ping() == {worker: {"ok": "pong"}}, (attempt, workers.log("busy")[-3000:])
        reply = inspect.active()
        assert reply is not None and worker in reply, (attempt, workers.log("busy")[-3000:])
        assert [task["id"] for task in reply[worker]] == [ids[0]], reply
    # Asked while the tasks behind the first still waited for the one child (3 x 2 s).
    assert 3 not in workers.executions(), workers.executions()
    assert wait_until(lambda: set(workers.executions()) == {*range(4), 100}, 60), (
        workers.executions()
    )
    assert sum(workers.executions().values()) == 5  # each ran once


def test_a_task_that_expires_while_waiting_for_a_child_is_not_run(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    _ready(workers, "expiry")
    app = workers.app()
    for seq in range(2):  # the child is busy for 2 x 3 s
        app.send_task("proj.record", (seq, 3.0))
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    expiring = app.send_task("proj.add", (1, 2), expires=expires)
    later = app.send_task("proj.add", (2, 3))
    assert later.get(timeout=60) == 5, workers.log("expiry")[-3000:]
    # Received before it expired, but a child was free only after: Celery revoked it.
    assert wait_until(lambda: expiring.state == "REVOKED", 30), (
        expiring.state,
        workers.log("expiry")[-3000:],
    )
    log = workers.log("expiry")
    assert f"Discarding revoked task: proj.add[{expiring.id}]" in log, log[-3000:]
    assert f"proj.add[{expiring.id}] succeeded" not in log, log[-3000:]


def test_tasks_waiting_for_a_child_are_redelivered_after_a_kill_9(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    _ready(workers, "first")
    first = workers.procs[-1]
    app = workers.app()
    # Acknowledged when a child starts it (Celery's default): the ones waiting for the
    # child (prefetch multiplier 4) are received by the worker but not acknowledged.
    for seq in range(6):
        app.send_task("proj.record_early", (seq, 1.5))
    assert wait_until(lambda: 0 in workers.started(), 30), workers.log("first")[-3000:]
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(first.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    try:
        assert 5 not in workers.executions()  # queued behind the busy child at the kill
        workers.start("second", *PREFORK_1)
        assert wait_until(lambda: set(range(6)) <= set(workers.executions()), 90), (
            workers.executions(),
            workers.log("second")[-3000:],
        )
    finally:
        for pid in children:  # the killed worker's pool children, if still there
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
