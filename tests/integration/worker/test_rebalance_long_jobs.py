"""A partition moves away while its long job runs: the job learns it, the old owner commits
nothing more for it, the new owner resumes from the last commit; an unaffected partition's
job (cooperative-sticky) carries on untouched."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kafka_jobs import App, current_job
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import unique_name, wait_until

JOB_SECONDS = 20


class Ledger:
    """What every execution saw, shared by the two in-process workers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[dict[str, Any]] = []
        self.started: set[str] = set()

    def starts(self, job_id: str) -> bool:
        """True for the first execution of a job id."""
        with self.lock:
            first = job_id not in self.started
            self.started.add(job_id)
            return first

    def add(self, **run: Any) -> None:
        with self.lock:
            self.runs.append({**run, "at": time.monotonic()})


def make_app(
    kafka_app, topic: str, group: str, prefix: str, strategy: str, label: str, ledger: Ledger
) -> App:
    app = kafka_app(
        default_topic=topic,
        group_id=group,
        delay_topic_prefix=prefix,
        consumer_config={"partition.assignment.strategy": strategy},
    )
    app.configure_topic(topic, long_running=True)

    @app.job(key="key", name="slow")
    def slow(key: str) -> None:
        job = current_job()
        if not ledger.starts(job.job_id):  # a redelivery: show who got it, quickly
            ledger.add(worker=label, job=job.job_id, partition=job.partition, outcome="rerun")
            return
        started = time.monotonic()
        while time.monotonic() - started < JOB_SECONDS:
            if job.revoked():
                ledger.add(worker=label, job=job.job_id, partition=job.partition, outcome="revoked")
                return
            time.sleep(0.05)
        ledger.add(worker=label, job=job.job_id, partition=job.partition, outcome="completed")

    return app


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_partition_moves_away_mid_job(kafka_app, new_topic, strategy: str) -> None:
    topic, group, prefix = new_topic(partitions=2), unique_name("g"), unique_name("delay")
    ledger = Ledger()
    app_a = make_app(kafka_app, topic, group, prefix, strategy, "A", ledger)
    app_b = make_app(kafka_app, topic, group, prefix, strategy, "B", ledger)
    events_a: list[Event] = []
    app_a.events.subscribe(events_a.append)
    slow = app_a.tasks["slow"]
    keys: dict[int, str] = {}
    for key in (f"k{i}" for i in range(50)):
        partition = slow.apply_async(args=(key,)).wait(10).partition
        assert partition is not None
        keys.setdefault(partition, key)
        if len(keys) == 2:
            break
    # Records enqueued while choosing keys queue up behind the slow ones; they are just
    # more jobs, which the assertions below allow for.

    with app_a.worker(dispatch_delayed=False):
        assert wait_until(lambda: len(ledger.started) >= 2, timeout=30)
        with app_b.worker(dispatch_delayed=False):
            # The new owner resumes from the last commit: A's unfinished record runs on B.
            def moved_run() -> dict[str, Any] | None:
                revoked = {
                    r["job"]: r
                    for r in ledger.runs
                    if r["worker"] == "A" and r["outcome"] == "revoked"
                }
                for run in ledger.runs:
                    if run["worker"] == "B" and run["job"] in revoked:
                        return revoked[run["job"]]
                return None

            assert wait_until(lambda: moved_run() is not None, timeout=60)
            moved = moved_run()
            assert moved is not None
            if strategy == "cooperative-sticky":
                # The partition that stayed was never revoked: its job ran to the end.
                assert wait_until(
                    lambda: any(
                        r["worker"] == "A" and r["outcome"] == "completed" for r in ledger.runs
                    ),
                    timeout=JOB_SECONDS + 30,
                )
                a_runs = [r for r in ledger.runs if r["worker"] == "A"]
                assert [r["outcome"] for r in a_runs].count("revoked") == 1, a_runs
            before_stop = list(events_a)

    moved_key = f"{topic}[{moved['partition']}]"
    revoked_at = next(
        i
        for i, e in enumerate(before_stop)
        if e.name in ("partitions.revoked", "partitions.lost")
        and (topic, moved["partition"]) in e.payload["partitions"]
    )
    late_commits = [
        e
        for e in before_stop[revoked_at + 1 :]
        if e.name == "offsets.committed" and moved_key in e.payload["offsets"]
    ]
    assert not late_commits, "the former owner committed a partition it no longer owns"
