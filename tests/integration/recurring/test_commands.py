"""`kafka-jobs schedule list | pause | resume | trigger` against a running leader."""

from __future__ import annotations

import json
import time
from typing import Any

from kafka_jobs.testing import wait_until
from tests.integration.recurring.conftest import Cluster, fire_times, job_ids


def _row(cluster: Cluster) -> dict[str, Any]:
    listed = cluster.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    return dict(rows["tick"])


def _applied(cluster: Cluster, paused: bool) -> dict[str, Any]:
    """The schedule's row once the leader applied every command and it is `paused`."""
    row: dict[str, Any] = {}

    def done() -> bool:
        nonlocal row
        row = _row(cluster)
        return row["pending_commands"] == 0 and row["paused"] is paused

    assert wait_until(done, 30, interval=0.3), f"not applied: {row}"
    return row


def test_pause_trigger_resume_through_the_cli(cluster: Cluster) -> None:
    cluster.start()
    cluster.leader()
    assert wait_until(lambda: len(fire_times(job_ids(cluster.broker, cluster.topic))) >= 2, 60)

    paused = cluster.cli("pause", "tick")
    assert paused.returncode == 0, paused.stderr + paused.stdout
    row = _applied(cluster, paused=True)
    last_before_pause = row["last_fire_ms"]
    assert row["next_ms"] is None
    # Let at least two fire times pass while paused, then trigger one run.
    assert wait_until(lambda: time.time() * 1000 > last_before_pause + 3500, 10)
    triggered = cluster.cli("trigger", "tick")
    assert triggered.returncode == 0, triggered.stderr
    offset = int(triggered.stdout.rsplit(" ", 1)[-1])
    trigger_id = f"recurring:tick:trigger:{offset}"
    assert wait_until(lambda: trigger_id in job_ids(cluster.broker, cluster.topic), 30)
    _applied(cluster, paused=True)
    ids = job_ids(cluster.broker, cluster.topic)
    assert ids[trigger_id] == 1
    assert max(fire_times(ids)) == last_before_pause  # nothing fired while paused

    resumed_at = int(time.time() * 1000)
    resumed = cluster.cli("resume", "tick")
    assert resumed.returncode == 0, resumed.stderr
    _applied(cluster, paused=False)

    def fires_again() -> bool:
        return max(fire_times(job_ids(cluster.broker, cluster.topic))) >= resumed_at + 2000

    assert wait_until(fires_again, 30, interval=0.5)
    times = fire_times(job_ids(cluster.broker, cluster.topic))
    assert len(times) == len(set(times))
    # Fire times that fell while paused are not caught up after the resume.
    assert not [t for t in times if last_before_pause < t <= resumed_at - 1000]

    listed = cluster.cli("list")
    assert listed.returncode == 0 and "tick" in listed.stdout and "active" in listed.stdout
    assert "every 1s" in listed.stdout


def test_commands_name_a_declared_schedule(cluster: Cluster) -> None:
    unknown = cluster.cli("pause", "nope")
    assert unknown.returncode == 2
    assert "no schedule named 'nope'" in unknown.stdout and "tick" in unknown.stdout
