"""The `kafka-jobs` command line: the development broker command serves real clients."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka.admin import AdminClient

from kafka_jobs.broker import free_port


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
