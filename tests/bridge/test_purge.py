"""`celery purge` / `app.control.purge()`: the group's offsets skip the waiting tasks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from celery_bridge.options import BridgeOptions
from kafka_jobs.connection.purge import GroupActive, active_members
from kafka_jobs.testing import wait_until
from tests.bridge.conftest import WorkerProcesses

WORKER = ("-P", "threads", "-c", "2", "--without-mingle", "--without-gossip")


def test_purge_discards_the_waiting_tasks_and_counts_them(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    # A flush per publish: one record per batch, so every broker's end offsets count them.
    workers.config["broker_transport_options"]["confirm_publish"] = True
    app = workers.app()
    for seq in range(20):
        app.send_task("proj.record", (seq,))
    assert app.control.purge() == 20
    assert app.control.purge() == 0  # nothing left to skip
    workers.start("after", *WORKER)
    app.send_task("proj.record", (100,))
    assert wait_until(lambda: workers.executions()[100] == 1, 60), workers.log("after")
    assert set(workers.executions()) == {100}, workers.executions()  # no purged task ran


def test_purge_is_refused_while_workers_of_the_group_run(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    app = workers.app()
    app.send_task("proj.record", (1,))
    workers.start("busy", *WORKER)
    assert wait_until(lambda: workers.executions()[1] == 1, 60), workers.log("busy")
    options = BridgeOptions.from_transport_options(
        workers.config["broker_transport_options"], [workers.broker.bootstrap_servers]
    )
    if active_members(options.admin_settings(), options.group_id) == 0:
        pytest.skip("this broker's group descriptions list no members: purge cannot tell")
    with pytest.raises(GroupActive, match="stop its workers first"):
        app.control.purge()
    app.send_task("proj.record", (2,))
    assert wait_until(lambda: workers.executions()[2] == 1, 60), workers.log("busy")
