"""Dead letters: what lands there, the CLI that lists and replays them, failing DLQ writes."""

from __future__ import annotations

import subprocess
import sys
import threading

from kafka_jobs import current_job, dlq
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ROOT

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def cli(broker: BrokerInfo, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kafka_jobs", "dlq", *args],
        cwd=ROOT,
        env=broker.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_always_failing_job_is_dead_lettered_listed_and_replayed(
    kafka_broker: BrokerInfo, kafka_app, new_topic
) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    fixed_runs: list[int] = []
    lock = threading.Lock()

    @app.job(key="order_id", retries=1, backoff=0.2)
    def charge(order_id: int) -> None:
        raise RuntimeError(f"card declined for order {order_id}")

    events: list[Event] = []
    app.events.subscribe(events.append)
    handle = charge.apply_async(args=(42,), headers={"traceparent": TRACEPARENT}).wait(10)

    with app.worker():
        assert wait_until(lambda: any(e.name == "job.dead_lettered" for e in events), timeout=30)
    letters = dlq.read(app, f"{topic}.dlq").pending()
    assert len(letters) == 1
    letter = letters[0]
    info = letter.info
    assert letter.key == b"42"
    assert letter.value == b'{"args":[42],"kwargs":{}}'
    assert letter.task == charge.name
    assert info["reason"] == "job-failed"
    assert info["exception"] == "builtins.RuntimeError"
    assert info["message"] == "card declined for order 42"
    assert "in charge" in info["traceback"] and "RuntimeError" in info["traceback"]
    assert (info["topic"], info["partition"], info["offset"]) == (topic, "0", str(handle.offset))
    assert info["group"] == app.settings.group_id
    assert info["attempts"] == "2"
    assert int(info["first-failed-at"]) <= int(info["last-failed-at"])
    assert info["host"]
    assert info["trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    # The source offset moved past the record only once the dead letter was written.
    assert kafka_broker.committed(app.settings.group_id, topic) == 1

    listing = cli(kafka_broker, "list", f"{topic}.dlq")
    assert (
        "RuntimeError" in listing and "card declined" in listing and "1 dead letter(s)" in listing
    )
    shown = cli(kafka_broker, "show", f"{topic}.dlq", str(letter.offset))
    assert "Traceback" in shown and "trace-id" in shown

    def charge_fixed(order_id: int) -> None:  # the bug fix is deployed
        with lock:
            fixed_runs.append(current_job().attempt)

    charge.fn = charge_fixed
    assert "replayed 1 dead letter(s)" in cli(kafka_broker, "replay", f"{topic}.dlq")
    assert "replayed 0 dead letter(s)" in cli(kafka_broker, "replay", f"{topic}.dlq")
    with app.worker():
        assert wait_until(lambda: fixed_runs == [1], timeout=30)
    assert "0 dead letter(s)" in cli(kafka_broker, "list", f"{topic}.dlq")


def test_failing_dead_letter_write_keeps_the_record_unconsumed(kafka_app, new_topic) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic, delivery_timeout=2.0)
    app.configure_topic(topic, dead_letter_topic="not a valid topic!")
    ran: list[int] = []

    @app.job
    def step(n: int) -> None:
        if n == 0:
            raise ValueError("always")
        ran.append(n)

    events: list[Event] = []
    app.events.subscribe(events.append)
    for n in range(3):
        step.delay(n)
    app.flush(10)
    with app.worker():
        assert wait_until(
            lambda: sum(e.name == "dead_letter.failed" for e in events) >= 2, timeout=30
        )
        assert ran == []  # nothing behind the record moved on
        app.configure_topic(topic, dead_letter_topic=f"{topic}.parking")  # operator fixes it
        assert wait_until(lambda: ran == [1, 2], timeout=30)
    job_runs = [e for e in events if e.name == "job.failed"]
    assert len(job_runs) == 1, "a failed dead-letter write must not run the job again"
    assert len(dlq.read(app, f"{topic}.parking").letters) == 1
