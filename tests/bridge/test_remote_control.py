"""Every `celery inspect` / `celery control` command answers over Kafka within Celery's
default timeout (1 s), replies of hundreds of kB included, and each takes effect."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

from celery.canvas import Signature

from kafka_jobs.testing import unique_name, wait_until
from tests.bridge.conftest import WorkerProcesses

BIG = "x" * 300_000  # a conf reply of ~300 kB (Kafka's default record limit is 1 MB)
INSPECT = (
    "ping",
    "conf",
    "stats",
    "registered",
    "revoked",
    "active_queues",
    "active",
    "scheduled",
    "reserved",
    "report",
    "clock",
    "query_task",
)


def test_every_inspect_and_control_command_answers_and_acts(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = celery_processes()
    workers.extra_env["PROJ_BIG_SETTING"] = str(len(BIG))
    worker = f"rc@{socket.gethostname()}"
    process = workers.start("rc", "-P", "prefork", "-c", "2", "--without-mingle")
    app = workers.app()
    assert wait_until(lambda: bool(app.control.ping([worker], timeout=1.0)), 60), workers.log("rc")
    # Default timeout; with a destination Celery returns as soon as that worker replied.
    inspect = app.control.inspect([worker])
    for command in INSPECT:
        reply = getattr(inspect, command)()
        assert reply is not None and worker in reply, (command, workers.log("rc")[-3000:])
    assert inspect.conf()[worker]["proj_big_setting"] == BIG

    def control(command: str, *args: object, **options: object) -> str:
        replies = getattr(app.control, command)(*args, destination=[worker], reply=True, **options)
        assert replies and worker in replies[0], (command, replies)
        answer = replies[0][worker]
        assert "ok" in answer, (command, answer)
        return str(answer["ok"])

    # revoke by id: a task sent afterwards with that id is discarded, not run.
    revoked_id = str(uuid.uuid4())
    control("revoke", revoked_id)
    assert revoked_id in inspect.revoked()[worker]
    app.send_task("proj.record", (1,), task_id=revoked_id)
    assert workers.wait_log("rc", f"Discarding revoked task: proj.record[{revoked_id}]", 30)
    # revoke by stamped headers: a task carrying the stamp is discarded.
    stamp = uuid.uuid4().hex
    control("revoke_by_stamped_headers", {"monitoring_id": stamp})
    stamped = Signature("proj.record", args=(2,), app=app)
    stamped.stamp(monitoring_id=stamp)
    stamped_id = stamped.freeze().id
    stamped.apply_async()
    assert workers.wait_log("rc", f"Discarding revoked task: proj.record[{stamped_id}]", 30)
    # revoke with terminate: a running task is ended (the prefork pool kills its child).
    running = app.send_task("proj.record", (4, 60.0))

    def active() -> set[str]:  # polled: one reply late under load is not a failure here
        return {t["id"] for t in (inspect.active() or {}).get(worker, [])}

    assert wait_until(lambda: running.id in active(), 30), workers.log("rc")[-3000:]
    control("revoke", running.id, terminate=True)
    assert workers.wait_log("rc", f"Terminating {running.id}", 30), workers.log("rc")[-3000:]
    assert wait_until(lambda: running.id not in active(), 30), workers.log("rc")[-3000:]
    # rate and time limits are set on the worker's task.
    assert "successfully" in control("rate_limit", "proj.record", "100/s")
    assert "successfully" in control("time_limit", "proj.record", 10, 20)
    # a queue consumed at run time, then cancelled.
    extra = unique_name("celery-extra")
    control("add_consumer", extra)
    app.send_task("proj.record", (3,), queue=extra)
    assert wait_until(lambda: workers.executions()[3] == 1, 60), workers.log("rc")[-3000:]
    assert extra in {q["name"] for q in inspect.active_queues()[worker]}
    control("cancel_consumer", extra)
    assert extra not in {q["name"] for q in inspect.active_queues()[worker]}

    # the prefork pool grows and shrinks.
    def processes() -> int:
        stats = (inspect.stats() or {}).get(worker)
        return -1 if stats is None else len(stats["pool"]["processes"])

    control("pool_grow", 1)
    assert wait_until(lambda: processes() == 3, 30), inspect.stats()[worker]["pool"]
    control("pool_shrink", 1)
    assert wait_until(lambda: processes() == 2, 30), inspect.stats()[worker]["pool"]
    # revoked: never ran (or, terminated, never finished)
    assert not {1, 2, 4} & set(workers.executions()), workers.executions()
    # shutdown: the worker exits cleanly.
    app.control.shutdown(destination=[worker])
    assert process.wait(60) == 0


def test_a_revoke_sent_just_before_its_task_wins_without_waiting_for_a_reply(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    # As Celery's own tests do: revoke (no reply awaited), then publish at once. The
    # worker reads broadcasts and queues with two consumers; the queue side waits for
    # the broadcast side to catch up, so the revoke is seen first.
    workers = celery_processes()
    worker = f"race@{socket.gethostname()}"
    workers.start("race", "-P", "threads", "-c", "4", "--without-mingle")
    app = workers.app()
    assert wait_until(lambda: bool(app.control.ping([worker], timeout=1.0)), 60), workers.log(
        "race"
    )
    revoked: list[str] = []
    for seq in range(10):
        task_id = str(uuid.uuid4())
        app.control.revoke(task_id)
        app.send_task("proj.record", (seq,), task_id=task_id)
        revoked.append(task_id)
    for seq in range(10, 20):
        stamp = uuid.uuid4().hex
        app.control.revoke_by_stamped_headers({"monitoring_id": stamp})
        stamped = Signature("proj.record", args=(seq,), app=app)
        stamped.stamp(monitoring_id=stamp)
        revoked.append(stamped.freeze().id)
        stamped.apply_async()

    def discarded() -> int:
        log = workers.log("race")
        return sum(f"Discarding revoked task: proj.record[{i}]" in log for i in revoked)

    assert wait_until(lambda: discarded() == len(revoked), 60), (
        f"{discarded()} of {len(revoked)} discarded; ran: {sorted(workers.executions())}"
    )
    assert not workers.executions(), workers.executions()
