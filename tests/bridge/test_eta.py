"""Celery countdown / eta on kafkajobs://: far etas wait in the delay tiers, not in the worker.

With ``eta_threshold`` 2 s, a task due further ahead is written to a kafka-jobs delay
tier topic; the worker's delay dispatcher moves it to the queue topic when due. Meanwhile
the queue topic holds no record of it and the worker's group commits past it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from celery_bridge.topics import topic_name
from kafka_jobs.delay.tiers import tier_topics
from kafka_jobs.testing import unique_name, wait_until
from tests.bridge.conftest import WorkerProcesses

WORKER = ("-P", "threads", "-c", "4", "--without-mingle", "--without-gossip")
THRESHOLD = 2.0


def _delaying(workers: WorkerProcesses) -> WorkerProcesses:
    """Workers and their client with a 2 s threshold and delay topics of their own."""
    options = workers.config["broker_transport_options"]
    options["eta_threshold"] = THRESHOLD
    options["delay_topic_prefix"] = unique_name("celery-delay")
    # A flush per publish: one record per batch, so every broker's end offsets count them.
    options["confirm_publish"] = True
    return workers


def _consumer(workers: WorkerProcesses) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": workers.broker.bootstrap_servers,
            "group.id": unique_name("eta-reader"),
            "enable.auto.commit": False,
        }
    )


def _records(workers: WorkerProcesses, topics: list[str]) -> list[dict[str, Any]]:
    """The Celery headers of every record of `topics` (read from the start, bounded)."""
    consumer = _consumer(workers)
    try:
        listed = consumer.list_topics(timeout=10).topics
        consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in topics
                if topic in listed
                for partition in listed[topic].partitions
            ]
        )
        found: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        deadline = quiet_since + 15
        while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
            for record in consumer.consume(100, 0.2):
                if record.error() is None:
                    found.append({k: v for k, v in record.headers() or []})
                    quiet_since = time.monotonic()
        return found
    finally:
        consumer.close()


def _ids(records: list[dict[str, Any]]) -> set[str]:
    return {json.loads(r["id"]) for r in records if r.get("id")}


def _group_at_end(workers: WorkerProcesses) -> bool:
    """The worker group's committed offset is at the end of every queue-topic partition."""
    topic = topic_name(workers.queue)
    group = workers.config["broker_transport_options"]["group_id"]
    consumer = _consumer(workers)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        for partition in partitions:
            _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            committed = workers.broker.committed(group, topic, partition)
            if end > 0 and committed != end:
                return False
        return True
    finally:
        consumer.close()


def test_far_countdown_waits_in_the_tiers_and_the_group_commits_past_it(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = _delaying(celery_processes())
    workers.start("eta", *WORKER)
    assert workers.wait_log("eta", "delay dispatcher started", 60), workers.log("eta")
    assert workers.wait_log("eta", "partitions assigned", 60), workers.log("eta")
    app = workers.app()
    countdown = 8.0
    for seq in range(10):
        app.send_task("proj.record", (seq,))
    eta = time.time() + countdown
    delayed = app.send_task("proj.record", (100,), countdown=countdown)
    timed = app.send_task("proj.where", countdown=countdown)
    for seq in range(10, 20):
        app.send_task("proj.record", (seq,))

    # Every task around it runs, and the group commits to the queue topic's end...
    assert wait_until(lambda: len(workers.executions()) == 20, 30), workers.log("eta")
    assert wait_until(lambda: _group_at_end(workers), 15), workers.log("eta")
    # ...while the delayed tasks wait in a tier topic, not in the queue topic.
    queue_ids = _ids(_records(workers, [topic_name(workers.queue)]))
    prefix = workers.config["broker_transport_options"]["delay_topic_prefix"]
    assert delayed.id not in queue_ids and timed.id not in queue_ids
    assert workers.executions()[100] == 0
    assert time.time() < eta, "the checks took longer than the countdown"
    assert {delayed.id, timed.id} <= _ids(_records(workers, tier_topics(prefix)))

    ran_at = timed.get(timeout=countdown + 20)["ran_at"]
    assert ran_at >= eta  # not before its eta
    assert wait_until(lambda: workers.executions()[100] == 1, 10), workers.log("eta")
    assert delayed.id in _ids(_records(workers, [topic_name(workers.queue)]))  # moved when due
    time.sleep(1)
    assert workers.executions() == dict.fromkeys([*range(20), 100], 1)


def test_kill_9_while_a_task_waits_runs_it_once_after_its_eta(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = _delaying(celery_processes())
    first = workers.start("crash", *WORKER)
    assert workers.wait_log("crash", "delay dispatcher started", 60), workers.log("crash")
    app = workers.app()
    countdown = 6.0
    eta = time.time() + countdown
    app.send_task("proj.record", (7,), countdown=countdown)
    timed = app.send_task("proj.where", countdown=countdown)
    time.sleep(2)  # the dispatcher holds it, paused until its tier releases it
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert workers.executions()[7] == 0
    workers.start("crash", *WORKER)
    ran_at = timed.get(timeout=60)["ran_at"]
    assert ran_at >= eta
    assert wait_until(lambda: workers.executions()[7] == 1, 30), workers.log("crash")
    time.sleep(1)
    assert workers.executions() == {7: 1}


def test_countdown_below_the_threshold_goes_to_the_queue_as_before(
    celery_processes: Callable[[], WorkerProcesses],
) -> None:
    workers = _delaying(celery_processes())
    workers.start("near", *WORKER)
    assert workers.wait_log("near", "partitions assigned", 60), workers.log("near")
    app = workers.app()
    countdown = 1.0
    eta = time.time() + countdown
    timed = app.send_task("proj.where", countdown=countdown)
    app.send_task("proj.record", (1,), countdown=countdown)
    assert timed.get(timeout=30)["ran_at"] >= eta
    assert wait_until(lambda: workers.executions()[1] == 1, 10), workers.log("near")
    # Held by the worker until its eta, as Celery does on any broker: it went to the queue.
    assert timed.id in _ids(_records(workers, [topic_name(workers.queue)]))
