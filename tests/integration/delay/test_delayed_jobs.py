"""Delayed jobs wait in delay-tier topics, never in front of other jobs, and survive kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop


def test_delayed_jobs_run_in_eta_order_not_before_their_time_and_do_not_block(
    kafka_app, new_topic
) -> None:
    topic = new_topic()  # one partition: a delayed record there would block everything behind it
    app = kafka_app(default_topic=topic)
    ran: list[tuple[str, float]] = []
    lock = threading.Lock()

    @app.job
    def note(label: str) -> None:
        with lock:
            ran.append((label, time.time()))

    with app.worker():
        handles = {
            label: note.apply_async(args=(label,), countdown=countdown)
            for label, countdown in (("late", 6.0), ("early", 1.5), ("middle", 4.5))
        }
        note.delay("now")  # enqueued after a 6 s delayed job, on the same partition
        cancelled = note.apply_async(args=("cancelled",), countdown=3.0)
        cancelled.wait(10)
        cancelled.cancel().wait(10)
        app.flush(10)
        assert wait_until(lambda: len(ran) == 4, timeout=60)
    labels = [label for label, _ in ran]
    assert labels == ["now", "early", "middle", "late"]
    for label, ran_at in ran[1:]:
        due = (handles[label].eta_ms or 0) / 1000
        assert ran_at >= due, f"{label} ran {due - ran_at:.3f}s before its eta"
        assert ran_at < due + 10, f"{label} ran {ran_at - due:.1f}s late"


def test_kill_9_before_the_eta_then_restart_runs_the_delayed_job_once(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(), new_group()
    record = ledger_producer(topic)
    record.app.settings  # noqa: B018 - the producer app must share the workers' delay prefix
    prefix = record.app.settings.delay_topic_prefix
    first = start_worker(kafka_broker, topic, group, tmp_path, delay_prefix=prefix)
    try:
        enqueue_ledger_jobs(record, 1)  # seq 0: proves the worker is up
        assert wait_until(lambda: len(ledger.executions(tmp_path)) == 1, timeout=60)
        record.apply_async(args=(1000, "delayed"), countdown=5.0).wait(10)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker(kafka_broker, topic, group, tmp_path, delay_prefix=prefix)
    try:
        assert wait_until(
            lambda: any(e.seq == 1000 for e in ledger.executions(tmp_path)), timeout=90
        )
        record.apply_async(args=(1001, "delayed"), countdown=2.0).wait(10)
        # Once a later delayed job ran, any duplicate of the first would have shown.
        assert wait_until(
            lambda: any(e.seq == 1001 for e in ledger.executions(tmp_path)), timeout=60
        )
    finally:
        assert stop(second) == 0
    assert [e.seq for e in ledger.executions(tmp_path)].count(1000) == 1
