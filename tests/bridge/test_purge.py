"""`celery purge` / `app.control.purge()`: the group's offsets skip the waiting tasks."""

from __future__ import annotations

from collections.abc import Callable

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


def test_purge_while_the_worker_runs_skips_what_it_has_not_taken(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.config["broker_transport_options"]["confirm_publish"] = True
    app = workers.app()
    # One slot, acks late: while seq 1 sleeps, Celery takes nothing more, and what
    # follows waits in the transport's buffer (fetched, never handed over).
    workers.start("live", *WORKER[:2], "-c", "1", "--prefetch-multiplier", "1", *WORKER[4:])
    app.send_task("proj.record", (1, 6.0))
    assert wait_until(lambda: 1 in workers.started(), 60), workers.log("live")
    for seq in range(10, 30):
        app.send_task("proj.record", (seq,))

    purged = app.control.purge()
    # The 20 waiting, plus the running one while it is unacked (Kafka counts records
    # not yet committed; Redis would count the 20 only).
    assert 20 <= purged <= 21, purged
    assert app.control.purge() == 0  # marks, not offsets: nothing left to skip

    app.send_task("proj.record", (100,))
    assert wait_until(lambda: workers.executions()[100] == 1, 60), workers.log("live")
    assert workers.executions()[1] == 1  # what Celery had taken runs, as with Redis
    assert not set(range(10, 30)) & set(workers.executions()), workers.executions()

    # A restarted worker (a new member: it reads the marks before its first batch)
    # runs none of the purged tasks either.
    workers.stop_all()
    workers.start("again", *WORKER)
    app.send_task("proj.record", (200,))
    assert wait_until(lambda: workers.executions()[200] == 1, 60), workers.log("again")
    assert set(workers.executions()) == {1, 100, 200}, workers.executions()


def test_a_worker_joining_after_a_live_purge_skips_the_purged_tasks(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.config["broker_transport_options"]["confirm_publish"] = True
    app = workers.app()
    # A member of the group on another queue: the group is active, so the purge
    # cannot move its offsets and only the mark stands between the tasks and a worker.
    workers.start("other", *WORKER, "-Q", f"{workers.queue}-other")
    app.send_task("proj.record", (1,), queue=f"{workers.queue}-other")
    assert wait_until(lambda: workers.executions()[1] == 1, 60), workers.log("other")
    for seq in range(10, 30):
        app.send_task("proj.record", (seq,))
    assert app.control.purge() == 20

    workers.start("late", *WORKER)
    app.send_task("proj.record", (100,))
    assert wait_until(lambda: workers.executions()[100] == 1, 60), workers.log("late")
    assert set(workers.executions()) == {1, 100}, workers.executions()
