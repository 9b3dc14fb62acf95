"""`kafka-jobs broker --apache`: Apache Kafka nodes as child JVMs, resumable data, clear errors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_jobs.apache import DEFAULT_VERSION
from kafka_jobs.broker import free_port
from kafka_jobs.testing import create_topic, unique_name
from tests import ROOT

JAVA = shutil.which("java")
needs_java = pytest.mark.skipif(JAVA is None or shutil.which("mvn") is None, reason="no java/mvn")


def broker_command(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kafka_jobs", "broker", "--apache", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_to_end(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = broker_command(*args, env=env)
    _out, err = process.communicate(timeout=120)
    return process.returncode, err


def started(process: subprocess.Popen[str]) -> str:
    """The bootstrap address the command printed once every node was registered."""
    assert process.stdout is not None
    for _ in range(5):  # bounded: a few lines at most before the export line
        line = process.stdout.readline()
        if line.startswith("export KAFKA_BOOTSTRAP_SERVERS="):
            return line.strip().split("=", 1)[1]
        if not line:
            break
    assert process.stderr is not None
    raise AssertionError(f"no bootstrap address printed: {process.stderr.read()}")


def stopped(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    code = process.wait(90)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return code


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return int(consumer.committed([TopicPartition(topic, 0)], timeout=20)[0].offset)
    finally:
        consumer.close()


@needs_java
def test_a_second_start_on_the_same_data_resumes_topics_and_offsets(tmp_path: Path) -> None:
    data, port = tmp_path / "kafka", free_port()
    process = broker_command("--port", str(port), "--data", str(data))
    try:
        bootstrap = started(process)
        assert bootstrap == f"127.0.0.1:{port}"
        topic, group = create_topic(bootstrap, unique_name("kept"), 1), unique_name("g")
        producer = Producer({"bootstrap.servers": bootstrap})
        for n in range(5):
            producer.produce(topic, str(n).encode())
        assert producer.flush(30) == 0
        commit(bootstrap, group, topic, 3)
    finally:
        assert stopped(process) == 0
    # The JVM was a direct child: nothing listens once the command has exited.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert (data / "cluster.json").exists()

    process = broker_command("--data", str(data))
    try:
        assert started(process) == bootstrap  # same ports from the data directory
        assert committed(bootstrap, group, topic) == 3
        low, high = Consumer({"bootstrap.servers": bootstrap, "group.id": group}), None
        try:
            high = low.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
        finally:
            low.close()
        assert high == (0, 5)
    finally:
        assert stopped(process) == 0


@needs_java
def test_temporary_data_is_removed_on_stop(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    process = broker_command("--port", str(free_port()), env=env)
    try:
        started(process)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("kafka-jobs-apache-")]
    finally:
        assert stopped(process) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("kafka-jobs-apache-")]


def test_missing_java_names_the_fix(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no java, no mvn
    code, err = run_to_end("--port", str(free_port()), env=env)
    assert code == 2
    assert "java" in err and "install a JDK" in err


def test_missing_maven_names_the_fix_when_the_jars_are_not_cached(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(JAVA or "/bin/false")
    env = dict(os.environ, PATH=str(bin_dir), KAFKA_JOBS_CACHE=str(tmp_path / "cache"))
    code, err = run_to_end("--port", str(free_port()), env=env)
    assert code == 2
    assert "mvn" in err and "install Maven" in err


@needs_java
def test_a_failed_download_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, KAFKA_JOBS_CACHE=str(tmp_path / "cache"))
    code, err = run_to_end("--version", "4.99.0", "--port", str(free_port()), env=env)
    assert code == 2
    assert "could not download Apache Kafka 4.99.0 through Maven" in err
    assert not (tmp_path / "cache" / "apache-kafka" / "4.99.0" / "libs").exists()


@needs_java
def test_a_taken_port_names_the_fix() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, err = run_to_end("--port", str(port))
    assert code == 2
    assert f"port {port}" in err and "is taken" in err and "--port" in err


def test_versions_other_than_4x_are_refused() -> None:
    code, err = run_to_end("--version", "3.9.1", "--port", str(free_port()))
    assert code == 2 and "only 4.x.y" in err


def test_docker_compose_runs_the_launchers_kafka_version() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"apache/kafka:{DEFAULT_VERSION}" in compose
    assert "apache/kafka:" not in compose.replace(f"apache/kafka:{DEFAULT_VERSION}", "")
