"""`kafka-jobs topics plan | migrate`: declared topics brought in line with the cluster."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions, NewTopic

from kafka_jobs.connection.admin import topic_config
from kafka_jobs.testing import unique_name

_APP = "tests.integration.topics_app"


def _topics(kafka_broker, prefix: str, action: str) -> subprocess.CompletedProcess[str]:
    from tests import ROOT

    env = kafka_broker.env()
    env["TOPICS_PREFIX"] = prefix
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kafka_jobs",
            "topics",
            action,
            "-A",
            "tests.integration.topics_app",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _create(admin: AdminClient, name: str, partitions: int, config: dict[str, str]) -> None:
    for future in admin.create_topics([NewTopic(name, partitions, -1, config=config)]).values():
        future.result(15)


def _adds_partitions(admin: AdminClient) -> bool:
    """Probe: does this broker add partitions to a topic (CreatePartitions)?"""
    probe = unique_name("probe-partitions")
    _create(admin, probe, 1, {})
    try:
        for future in admin.create_partitions([NewPartitions(probe, 2)]).values():
            future.result(15)
    except Exception:
        return False
    return True


def _rows(table: str) -> list[tuple[str, ...]]:
    """(topic, action, detail) of each row of the command's table."""
    return [tuple(line.split(None, 2)) for line in table.splitlines()[1:]]


def _partitions(admin: AdminClient, topic: str) -> int:
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def test_plan_then_migrate_creates_grows_and_configures_and_a_second_run_changes_nothing(
    kafka_broker,
) -> None:
    prefix = unique_name("decl")
    config = {"bootstrap.servers": kafka_broker.bootstrap_servers}
    admin = AdminClient(config)
    _create(admin, f"{prefix}.small", 1, {"retention.ms": "60000"})
    _create(admin, f"{prefix}.big", 4, {})

    plan = _topics(kafka_broker, prefix, "plan")
    assert plan.returncode == 1, plan.stderr
    rows = _rows(plan.stdout)
    assert (f"{prefix}.orders", "create") in {row[:2] for row in rows}, plan.stdout
    assert (f"{prefix}.small", "add-partitions", "1 -> 3") in rows, plan.stdout
    assert (f"{prefix}.small", "set-config", "retention.ms: 60000 -> 3600000") in rows
    assert (f"{prefix}.big", "warn") in {row[:2] for row in rows}
    created = {row[0] for row in rows if row[1] == "create"}
    for implied in (".results", ".small.dlq", ".status", ".delay.cancelled"):
        assert f"{prefix}{implied}" in created, (implied, plan.stdout)
    assert _partitions(admin, f"{prefix}.small") == 1  # plan changes nothing

    grows = _adds_partitions(admin)
    migrate = _topics(kafka_broker, prefix, "migrate")
    assert migrate.returncode == (0 if grows else 1), migrate.stdout + migrate.stderr
    assert _partitions(admin, f"{prefix}.orders") == 3
    assert topic_config(config, f"{prefix}.orders")["retention.ms"] == "7200000"
    assert topic_config(config, f"{prefix}.small")["retention.ms"] == "3600000"
    assert topic_config(config, f"{prefix}.results")["cleanup.policy"] == "compact,delete"
    assert _partitions(admin, f"{prefix}.results") == 2
    assert _partitions(admin, f"{prefix}.big") == 4  # never shrunk
    if grows:
        assert _partitions(admin, f"{prefix}.small") == 3
    else:  # the broker refuses: said so clearly, the rest still applied
        errors = [row for row in _rows(migrate.stdout) if row[1] == "error"]
        assert [row[0] for row in errors] == [f"{prefix}.small"], migrate.stdout
        assert "add-partitions" in errors[0][2] and "not supported" in errors[0][2]

    again = _topics(kafka_broker, prefix, "migrate")
    changed = [row[:2] for row in _rows(again.stdout) if row[1] != "warn"]
    assert (f"{prefix}.big", "warn") in {row[:2] for row in _rows(again.stdout)}
    if grows:
        assert again.returncode == 0, again.stdout
        assert changed == [], again.stdout  # only the standing warning about .big
    else:
        assert changed == [(f"{prefix}.small", "error")], again.stdout
