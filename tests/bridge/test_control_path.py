"""Remote control on kafkajobs:// without the queue path's batching, and in publish order.

* A command or reply is sent at once, whatever the producer's ``linger.ms`` (tasks keep
  it: they are batched for throughput).
* ``inspect scheduled`` lists an eta task the same client published just before it,
  at the first call (Celery's own ``test_scheduled``): the client has the task
  acknowledged before it writes the command, and the worker fetches its queues up to
  their ends and hands Celery their eta tasks before it answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kafka_jobs.testing import wait_until
from tests.bridge.conftest import WorkerProcesses

WORKER = ("-P", "threads", "-c", "2", "--without-mingle", "--without-gossip")
# Far above Celery's 1 s reply timeout: a command or reply that waited for it would be late.
LINGER_MS = 3000


def _started(workers: WorkerProcesses, name: str) -> str:
    worker = f"{name}@{socket.gethostname()}"
    workers.start(name, *WORKER)
    app = workers.app()
    assert wait_until(lambda: bool(app.control.ping([worker], timeout=1.0)), 60), workers.log(name)
    return worker


def test_commands_and_replies_do_not_wait_for_the_producers_linger(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.config["broker_transport_options"]["producer_config"] = {"linger.ms": LINGER_MS}
    worker = _started(workers, "linger")
    inspect = workers.app().control.inspect([worker])  # Celery's default timeout: 1 s
    for _ in range(5):
        began = time.monotonic()
        reply = inspect.ping()
        took = time.monotonic() - began
        assert reply == {worker: {"ok": "pong"}}, workers.log("linger")[-3000:]
        # Each of the two hops would wait 3 s for the linger without the flush.
        assert took < LINGER_MS / 1000, took


def test_scheduled_lists_the_eta_task_published_just_before(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    worker = _started(workers, "scheduled")
    app = workers.app()
    inspect = app.control.inspect([worker])
    # The group has its partitions once a task ran (a ping needs no group).
    app.send_task("proj.record", (100,))
    assert wait_until(lambda: 100 in workers.executions(), 60), workers.log("scheduled")[-3000:]
    # Below the bridge's eta_threshold (10 s): the task goes to the queue topic, and
    # Celery keeps it in its timer until then.
    sent: list[str] = []
    listed: list[str] = []

    def lists_all() -> bool:
        reply = inspect.scheduled()
        assert reply is not None and worker in reply, workers.log("scheduled")[-3000:]
        listed[:] = [entry["request"]["id"] for entry in reply[worker]]
        return set(listed) == set(sent)

    for seq in range(5):
        eta = datetime.now(UTC) + timedelta(seconds=8)
        sent.append(app.send_task("proj.record", (seq,), eta=eta).id)
        # The first call lists every task sent so far, the last one included
        # (Celery's test_scheduled asks once).
        assert lists_all(), (seq, listed, sent, workers.log("scheduled")[-3000:])
    assert wait_until(lambda: set(workers.executions()) == {*range(5), 100}, 60), (
        workers.executions(),
        workers.log("scheduled")[-3000:],
    )
