"""Jobs that must not start: past their `expires` time, or revoked through Kafka."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

import kafka_jobs
from kafka_jobs import JobExpired, JobRevoked, dlq
from kafka_jobs.testing import unique_name, wait_until


def _events(app, *names: str) -> list[tuple[str, dict[str, object]]]:
    seen: list[tuple[str, dict[str, object]]] = []
    app.events.subscribe(
        lambda event: seen.append((event.name, event.payload)) if event.name in names else None
    )
    return seen


def test_a_job_past_its_expiry_is_not_started_and_its_result_says_so(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))
    ran: list[int] = []

    @app.job(keep_result=True)
    def work(n: int) -> int:
        ran.append(n)
        return n

    late = work.apply_async((1,), expires=0.2)
    in_time = work.apply_async((2,), expires=600)
    app.flush(30)
    time.sleep(0.5)  # no worker yet: the first job's expiry passes while it waits
    seen = _events(app, "job.expired")
    with app.worker(concurrency=1):
        assert in_time.get(timeout=30) == 2
        with pytest.raises(JobExpired):
            late.get(timeout=30)
        assert late.state == "expired"
    assert ran == [2]
    assert [payload["job_id"] for _, payload in seen] == [late.id]


def test_expired_jobs_are_dead_lettered_with_their_reason_when_configured(
    kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, dead_letter_expired=True)
    app.configure_topic(topic, dead_letter_topic=f"{topic}.dlq")

    @app.job(expires=0.2)
    def work() -> None: ...

    late = work.delay()
    app.flush(30)
    time.sleep(0.5)
    with app.worker(concurrency=1):
        found: list[object] = []
        assert wait_until(
            lambda: bool(found.extend(dlq.read(app, f"{topic}.dlq", idle=0.5).letters) or found),
            timeout=60,
        )
    [letter] = found
    assert letter.info["reason"] == "expired"  # type: ignore[attr-defined]
    assert late.id in letter.info["message"]  # type: ignore[attr-defined]


def test_a_revoked_job_is_skipped_and_an_unknown_id_is_harmless(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))
    release = threading.Event()
    ran: list[str] = []

    @app.job(keep_result=True)
    def work(name: str) -> str:
        if name == "first":
            release.wait(30)
        ran.append(name)
        return name

    with app.worker(concurrency=1) as worker:
        first = work.delay("first")  # holds the only partition's batch
        assert wait_until(lambda: first.state == "started", timeout=30)
        second = work.delay("second")
        second.revoke()
        assert app.revoke("no-such-job") == 1
        # The worker learns revocations from the topic; then the blocked job may end.
        assert wait_until(lambda: worker.control.is_revoked(second.id, 0), timeout=30)
        release.set()
        third = work.delay("third")
        assert third.get(timeout=30) == "third"
        with pytest.raises(JobRevoked):
            second.get(timeout=30)
    assert ran == ["first", "third"]


def test_revocations_made_while_no_worker_ran_and_delayed_jobs_are_honoured(
    kafka_app, new_topic
) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))
    ran: list[str] = []

    @app.job(keep_result=True)
    def work(name: str) -> str:
        ran.append(name)
        return name

    queued = work.delay("queued")
    delayed = work.apply_async(("delayed",), countdown=1)
    app.revoke([queued.id, delayed.id])
    after = work.apply_async(("after",), countdown=1)  # same tier, behind `delayed`
    with app.worker(concurrency=1):
        assert after.get(timeout=60) == "after"
        with pytest.raises(JobRevoked):
            queued.get(timeout=30)
    # `delayed` waited in the same tier topic before `after`: had it been moved on, it
    # would have reached the job topic first.
    assert ran == ["after"]
    assert kafka_jobs.result(delayed.id, app).state == "pending"


def test_kafka_jobs_revoke_on_the_command_line(kafka_app, kafka_broker, new_topic) -> None:
    from tests import ROOT

    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))

    @app.job(keep_result=True)
    def work(name: str) -> str:
        return name

    doomed, kept = work.delay("doomed"), work.delay("kept")
    app.flush(30)
    revoked = subprocess.run(
        [sys.executable, "-m", "kafka_jobs", "revoke", doomed.id],
        cwd=ROOT,
        env=kafka_broker.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1 job(s)" in revoked.stdout
    with app.worker(concurrency=1):
        assert kept.get(timeout=30) == "kept"
        with pytest.raises(JobRevoked):
            doomed.get(timeout=30)
