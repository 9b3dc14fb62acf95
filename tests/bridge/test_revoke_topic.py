"""Celery's ``revoke`` kept in kafka-jobs' revocations topic (`celery_bridge.revoking`).

A worker started after the revoke (it never heard the broadcast) skips the task,
and Celery marks it revoked; a task sent with it, not revoked, runs.
"""

from __future__ import annotations

from collections.abc import Callable

from kafka_jobs.testing import unique_name, wait_until
from tests.bridge.conftest import WorkerProcesses


def test_a_worker_started_after_the_revoke_never_runs_the_task(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.config["broker_transport_options"]["revoke_topic"] = unique_name("revoked")
    app = workers.app()
    revoked = app.send_task("proj.add", (1, 2))
    app.control.revoke(revoked.id)  # no worker runs yet: nobody hears the broadcast
    kept = app.send_task("proj.add", (2, 3))
    workers.start("late", "-P", "threads", "-c", "2", "--without-mingle", "--without-gossip")
    assert kept.get(timeout=90) == 5, workers.log("late")[-3000:]
    assert wait_until(lambda: revoked.state == "REVOKED", 30), (
        revoked.state,
        workers.log("late")[-3000:],
    )
    log = workers.log("late")
    assert f"Discarding revoked task: proj.add[{revoked.id}]" in log, log[-3000:]
    assert f"proj.add[{revoked.id}] succeeded" not in log, log[-3000:]
    # Skipped from the topic: the worker never received the revoke command itself.
    assert "Tasks flagged as revoked" not in log, log[-3000:]


def test_a_restarted_prefork_worker_skips_a_task_revoked_while_the_group_was_down(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.config["broker_transport_options"]["revoke_topic"] = unique_name("revoked")
    app = workers.app()
    first = workers.start("one", "-P", "threads", "-c", "1", "--without-mingle", "--without-gossip")
    assert workers.wait_log("one", "ready.", 60), workers.log("one")
    app.send_task("proj.record", (100,))
    assert wait_until(lambda: 100 in workers.executions(), 60), workers.log("one")[-3000:]
    first.terminate()
    first.wait(30)
    # Sent and revoked while no worker runs, then a new worker process of the group.
    revoked = app.send_task("proj.add", (1, 2))
    app.control.revoke([revoked.id])  # a list, as GroupResult.revoke sends
    kept = app.send_task("proj.add", (2, 3))
    workers.start("two", "-P", "prefork", "-c", "1", "--without-mingle", "--without-gossip")
    assert kept.get(timeout=90) == 5, workers.log("two")[-3000:]
    assert wait_until(lambda: revoked.state == "REVOKED", 30), workers.log("two")[-3000:]
    assert f"proj.add[{revoked.id}] succeeded" not in workers.log("two")
