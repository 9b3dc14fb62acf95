"""Figures the worker shows about the broker equal the broker's own.

End offsets, committed offsets and lag in `kafka-jobs status`, the dashboard's data
and the worker's metrics, for records produced in batches (as users produce them),
checked against the offsets the broker acknowledged to the producer. And partitions
added to a topic while a worker runs are consumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka.admin import NewPartitions

from kafka_jobs import current_job
from kafka_jobs.connection import probes
from kafka_jobs.instrumentation.metrics import Metrics
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ROOT


def status_rows(broker: BrokerInfo, group: str, topic: str) -> dict[int, dict]:
    env = broker.env()
    env.update(LEDGER_TOPIC=topic, LEDGER_DIR="/nonexistent")
    result = subprocess.run(
        [sys.executable, "-m", "kafka_jobs", "status", "-A", "tests.integration.ledger_app",
         "--group", group, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {r["partition"]: r for r in json.loads(result.stdout) if r["topic"] == topic}


def test_end_committed_and_lag_equal_the_brokers(kafka_broker, kafka_app, new_topic) -> None:
    exact, end = probes.end_offsets_follow_batches(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}
    )
    if not exact:
        pytest.skip(f"probe: end offset {end} after one batched produce of 20 records")
    pytest.importorskip("flask")
    from kafka_jobs.web import data

    topic = new_topic()
    app = kafka_app(default_topic=topic, commit_interval=0.2, status_interval=0.3)
    # Long-running: the listener keeps polling (and reading statistics) while a job holds.
    app.configure_topic(topic, long_running=True)
    group = app.settings.group_id
    release = threading.Event()
    ran: list[int] = []

    @app.job
    def step(n: int) -> None:
        if n == 5:
            release.wait(60)  # holds the commit mark at 5
        ran.append(n)

    first = [step.delay(n) for n in range(5)]
    app.flush(10)
    worker = app.worker()
    metrics = Metrics.attach(app, worker)
    with worker:
        assert wait_until(lambda: len(ran) == 5, timeout=30)
        later = [step.delay(n) for n in range(5, 35)]  # one batch, as users produce
        app.flush(10)
        end = 1 + max(h.wait(10).offset for h in [*first, *later])
        assert end == 35

        def shown() -> tuple:
            row = status_rows(kafka_broker, group, topic)[0]
            view = data.collect(app).group(group)
            dash = {p.partition: p for p in view.partitions if p.topic == topic} if view else {}
            dash_row = dash.get(0)
            return (
                (row["end"], row["committed"], row["lag"]),
                (dash_row.end, dash_row.committed, dash_row.lag) if dash_row else None,
                metrics.lag().get((topic, 0)),
            )

        held = ((35, 5, 30), (35, 5, 30), 30)
        assert wait_until(lambda: shown() == held, timeout=30, interval=0.3), shown()
        release.set()
        assert wait_until(lambda: len(ran) == 35, timeout=30)
        done = ((35, 35, 0), (35, 35, 0), 0)
        assert wait_until(lambda: shown() == done, timeout=30, interval=0.3), shown()


def test_partitions_added_while_a_worker_runs_are_consumed(
    kafka_broker: BrokerInfo, kafka_app, new_topic
) -> None:
    refused = probes.creates_partitions({"bootstrap.servers": kafka_broker.bootstrap_servers})
    if refused is not None:
        pytest.skip(f"probe: the broker refused CreatePartitions ({refused})")
    topic = new_topic(partitions=1)
    admin = kafka_broker.admin()
    # Clients learn of new partitions at their next metadata refresh (5 min by default).
    app = kafka_app(
        default_topic=topic,
        kafka_config={"topic.metadata.refresh.interval.ms": 500},
        consumer_config={"topic.metadata.refresh.interval.ms": 500},
    )
    ran: dict[str, int] = {}

    @app.job(key="key")
    def note(key: str) -> None:
        ran[key] = current_job().partition

    note.delay("before")
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: "before" in ran, timeout=30)
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(15)
        placed: dict[str, int] = {}
        for n in range(200):  # until the producer has put jobs on both new partitions
            key = f"k{n}-{uuid.uuid4().hex[:4]}"
            placed[key] = note.delay(key).wait(10).partition
            if {1, 2} <= set(placed.values()):
                break
            if n % 10 == 9:
                time.sleep(0.3)  # let the producer's metadata catch up
        assert {1, 2} <= set(placed.values()), f"never placed on new partitions: {placed}"
        assert wait_until(lambda: all(k in ran for k in placed), timeout=60)
    assert {k: ran[k] for k in placed} == placed
    for partition in (1, 2):
        assert kafka_broker.committed(app.settings.group_id, topic, partition) > 0
