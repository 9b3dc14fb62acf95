"""Celery events over Kafka: a monitor (as `celery events` and Flower do) sees the worker's
task and heartbeat events."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from kafka_jobs.testing import wait_until
from tests.bridge.conftest import WorkerProcesses

LIFECYCLE = {"task-received", "task-started", "task-succeeded"}


def test_a_monitor_receives_the_task_events_of_a_worker_started_with_E(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    worker = f"ev@{socket.gethostname()}"
    workers.start("ev", "-P", "threads", "-c", "2", "-E", "--without-mingle")
    app = workers.app()
    assert wait_until(lambda: bool(app.control.ping([worker], timeout=1.0)), 60), workers.log("ev")
    seen: list[dict[str, Any]] = []
    state = app.events.State()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        state.event(event)

    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": on_event})
        capture = threading.Thread(target=receiver.capture, kwargs={"limit": None}, daemon=True)
        capture.start()
        try:
            # The monitor reads events sent once it is bound: wait until it sees one.
            assert wait_until(
                lambda: any(e["type"] == "worker-heartbeat" for e in seen), 30, interval=0.5
            ), [e["type"] for e in seen]
            result = app.send_task("proj.add", (2, 3))
            assert result.get(timeout=30) == 5

            def lifecycle() -> set[str]:
                return {e["type"] for e in seen if e.get("uuid") == result.id}

            assert wait_until(lambda: lifecycle() >= LIFECYCLE, 30), lifecycle()
            assert state.tasks[result.id].state == "SUCCESS"
            assert state.tasks[result.id].worker.hostname == worker
        finally:
            receiver.should_stop = True
            capture.join(30)
    assert not capture.is_alive()
