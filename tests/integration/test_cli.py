"""The `kafka-jobs` command line: the development broker command serves real clients."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka.admin import AdminClient

from kafka_jobs.broker import free_port


def _status(kafka_broker, topic: str, ledger_dir, *args: str) -> str:
    """`kafka-jobs status -A tests.integration.ledger_app ARGS` output (exit 0 checked)."""
    from tests import ROOT

    env = kafka_broker.env()
    env.update(LEDGER_TOPIC=topic, LEDGER_DIR=str(ledger_dir))
    result = subprocess.run(
        [sys.executable, "-m", "kafka_jobs", "status", "-A", "tests.integration.ledger_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_broker_command_prints_its_address_and_serves_clients() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kafka_jobs", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert f"127.0.0.1:{port}" in first_line
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert metadata.brokers, "the broker answered a metadata request"
    finally:
        process.terminate()
        assert process.wait(15) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_status_shows_committed_end_and_lag_per_partition(
    kafka_broker, new_topic, new_group, ledger_producer, tmp_path
) -> None:
    import json
    from collections import Counter

    from confluent_kafka import Consumer, TopicPartition

    topic, group = new_topic(partitions=2), new_group()
    record = ledger_producer(topic)
    per_partition: Counter[int] = Counter()
    for seq in range(10):  # one record per produce: every broker reports end offsets right
        per_partition[record.delay(seq, f"k{seq}").wait(10).partition] += 1
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        consumer.close()

    result = _status(kafka_broker, topic, tmp_path, "--group", group, "--json")
    rows = {(r["topic"], r["partition"]): r for r in json.loads(result)}
    assert rows[(topic, 0)]["end"] == per_partition[0]
    assert rows[(topic, 0)]["committed"] == 1
    assert rows[(topic, 0)]["lag"] == per_partition[0] - 1
    assert rows[(topic, 1)]["committed"] is None
    assert rows[(topic, 1)]["lag"] == per_partition[1]
    table = _status(kafka_broker, topic, tmp_path, "--group", group)
    assert "lag" in table and topic in table


def test_json_logs_name_the_record_of_a_failure(kafka_broker, new_topic, tmp_path) -> None:
    import json
    import os
    import re

    from kafka_jobs.testing import wait_until
    from tests import ROOT

    topic = new_topic()
    env = {**os.environ, **kafka_broker.env(), "POOL_TOPIC": topic}
    env["POOL_LEDGER"] = str(tmp_path / "runs.txt")
    enqueue = (
        "from tests.integration.pool_app import app, work\n"
        "h = work.delay(5, 'raise'); app.flush(30); print(h.id, h.partition, h.offset)"
    )
    job_id, partition, offset = subprocess.run(
        [sys.executable, "-c", enqueue], cwd=ROOT, env=env, capture_output=True, text=True
    ).stdout.split()
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "kafka_jobs", "--log-format", "json", "worker"),
                *("-A", "tests.integration.pool_app", "--group", f"logs-{topic}"),
                *("--summary-interval", "0.5"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:

            def dead_lettered() -> list[dict[str, object]]:
                lines = [json.loads(x) for x in log_path.read_text().splitlines() if x[:1] == "{"]
                return [line for line in lines if str(line["msg"]).startswith("dead-lettered")]

            def summaries() -> list[str]:
                lines = [json.loads(x) for x in log_path.read_text().splitlines() if x[:1] == "{"]
                return [
                    str(line["msg"]) for line in lines if str(line["msg"]).startswith("summary")
                ]

            def summed(what: str) -> int:
                return sum(int(n) for m in summaries() for n in re.findall(rf"(\d+) {what}", m))

            assert wait_until(lambda: bool(dead_lettered()), timeout=60, interval=0.5)
            # One line per interval, not per job: the failures add up over the lines.
            assert wait_until(lambda: summed("dead-lettered") == 1, timeout=10, interval=0.5)
            assert summed("failed") == 3 and summed("retried") == 2
            assert all("threads busy" in m and "lag" in m for m in summaries())
        finally:
            worker.terminate()
            assert worker.wait(30) == 0
    (line,) = dead_lettered()
    assert (line["topic"], line["partition"], line["offset"], line["job_id"]) == (
        topic,
        int(partition),
        int(offset),
        job_id,
    )
    assert line["attempt"] == 3 and line["level"] == "warning"


def test_status_shows_paused_partitions_and_the_worker_that_holds_them(
    kafka_broker, new_topic, new_group, ledger_producer, tmp_path, monkeypatch
) -> None:
    import json
    import socket

    from kafka_jobs.testing import unique_name, wait_until
    from tests.integration.conftest import start_worker

    topic, group = new_topic(partitions=2), new_group()
    monkeypatch.setenv("KAFKA_JOBS_STATUS_TOPIC", unique_name("status"))
    monkeypatch.setenv("KAFKA_JOBS_STATUS_INTERVAL", "0.5")
    record = ledger_producer(topic)
    partitions = {record.delay(seq, f"k{seq}").wait(10).partition for seq in range(8)}
    assert partitions == {0, 1}
    # Long-running jobs of 60 s: while they run, their partitions stay paused.
    worker = start_worker(kafka_broker, topic, group, tmp_path, sleep=60, long_running=True)
    try:
        assert wait_until(lambda: len(list(tmp_path.glob("started-*"))) >= 2, timeout=60)

        def rows() -> dict[int, dict[str, object]]:
            found = json.loads(_status(kafka_broker, topic, tmp_path, "--group", group, "--json"))
            return {r["partition"]: r for r in found if r["kind"] == "jobs"}

        assert wait_until(lambda: all(r["paused"] for r in rows().values()), timeout=30)
        holder = f"{socket.gethostname()}:{worker.pid}"
        assert {r["worker"] for r in rows().values()} == {holder}
        table = _status(kafka_broker, topic, tmp_path, "--group", group)
        assert holder in table and "threads busy" in table and "yes" in table
    finally:
        worker.kill()
        worker.wait(10)
