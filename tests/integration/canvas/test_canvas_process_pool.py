"""A chord under the process pool: members and callback run in children, joins in the worker."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from kafka_jobs import chord
from kafka_jobs.testing import BrokerInfo, unique_name
from tests.integration.canvas.test_chord_crash import MEMBERS, _runs


def test_a_chord_runs_in_child_processes_and_joins_in_the_worker(
    kafka_broker: BrokerInfo, new_topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members_topic, callback_topic, runs_topic = new_topic(partitions=2), new_topic(), new_topic()
    environment = kafka_broker.env()  # the broker and the test's short group timeouts
    for name in ("KAFKA_BOOTSTRAP_SERVERS", *(k for k in environment if "_CONSUMER_" in k)):
        monkeypatch.setenv(name, environment[name])
    for name, value in {
        "CHORD_MEMBERS_TOPIC": members_topic,
        "CHORD_CALLBACK_TOPIC": callback_topic,
        "CHORD_RESULTS": unique_name("results"),
        "CHORD_RUNS": runs_topic,
        "CHORD_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)  # read by the app here and in the children
    chord_app = importlib.reload(importlib.import_module("tests.integration.canvas.chord_app"))
    app = chord_app.app
    try:
        handle = chord([chord_app.member.s(n) for n in range(MEMBERS)], chord_app.total.s()).delay()
        with app.worker(
            pool="processes",
            concurrency=2,
            group_id=unique_name("pool"),
            app_spec="tests.integration.canvas.chord_app",
        ) as worker:
            assert worker.processes is not None
            assert handle.get(timeout=90) == sum(n * n for n in range(MEMBERS))
            children = set(worker.processes.pids())
    finally:
        app.close(5)
    (run,) = _runs(kafka_broker, runs_topic)
    assert run["pid"] in children and run["pid"] != os.getpid()
    member_pids = {int(path.name.split("-")[2]) for path in tmp_path.glob("started-*")}
    assert member_pids and member_pids <= children
