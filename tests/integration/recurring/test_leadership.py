"""Recurring jobs over real workers: one leader per group, each fire time enqueued once."""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest

from kafka_jobs.testing import wait_until
from tests import ledger
from tests.integration.recurring.conftest import Cluster, fire_times, job_ids


def _fires(cluster: Cluster) -> list[int]:
    return fire_times(job_ids(cluster.broker, cluster.topic))


def _wait_for_fires(cluster: Cluster, count: int, timeout: float) -> list[int]:
    """The fire times once at least `count` were enqueued (fails after `timeout`)."""
    found: list[int] = []

    def enough() -> bool:
        nonlocal found
        found = _fires(cluster)
        return len(found) >= count

    assert wait_until(enough, timeout, interval=0.5), f"only {len(found)} fires: {found}"
    return found


def _assert_each_second_once(times: list[int]) -> None:
    assert len(times) == len(set(times)), f"a fire time was enqueued twice: {times}"
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert steps == {1000}, f"fire times skipped (steps {sorted(steps)}): {times}"


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_enqueue_each_fire_time_once(cluster: Cluster, workers: int) -> None:
    for _ in range(workers):
        cluster.start()
    cluster.leader()
    times = _wait_for_fires(cluster, 10, timeout=90)
    _assert_each_second_once(times)
    # Every enqueued fire time ran (by either worker) with its own fire time.
    runs = {e.seq for e in ledger.executions(cluster.directory)}
    assert wait_until(
        lambda: set(times) <= {e.seq for e in ledger.executions(cluster.directory)}, 30
    ), f"not run: {sorted(set(times) - runs)}"
    assert len(cluster.events("schedule.leading")) == 1  # the other one never led


def test_kill_9_of_the_leader_neither_skips_nor_doubles_a_fire_time(cluster: Cluster) -> None:
    cluster.start()
    cluster.start()
    leader = cluster.leader()
    before = _wait_for_fires(cluster, 4, timeout=60)
    killed_at = time.time()
    os.kill(leader, signal.SIGKILL)
    successor = cluster.leader(timeout=90, after=killed_at)
    assert successor != leader
    # The fire times of the leaderless gap are caught up (within misfire_grace), then it goes on.
    gap_end = int(time.time() * 1000)
    after = _wait_for_fires(cluster, 0, timeout=5)

    def goes_on() -> bool:
        nonlocal after
        after = _fires(cluster)
        return bool(after) and after[-1] >= gap_end + 3000

    assert wait_until(goes_on, 60, interval=0.5), f"stopped after the kill: {after}"
    assert after[: len(before)] == before
    _assert_each_second_once(after)


def test_an_unknown_job_is_reported_and_the_others_still_fire(cluster: Cluster) -> None:
    cluster.start(RECURRING_GHOST="1")
    cluster.leader()
    assert wait_until(lambda: bool(cluster.events("schedule.unknown_job")), 30)
    reported = cluster.events("schedule.unknown_job")[0]
    assert '"ghost"' in reported.detail and "recurring.not_registered" in reported.detail
    _wait_for_fires(cluster, 3, timeout=60)
    ids = job_ids(cluster.broker, cluster.topic)
    assert not [i for i in ids if i.startswith("recurring:ghost:")]
