"""Repeated kill -9 of random workers until the backlog is done: nothing lost."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable

from tests.chaos import ledger
from tests.chaos.conftest import SCALE, Cluster, progress, settle

JOBS = int(20_000 * SCALE)
# A job first run by a process may run again only if that process was killed, or lost
# the job's partition, within this many seconds after running it: the offset commit
# interval (1 s) plus one batch's run time, plus scheduling slack on a loaded 2-core
# machine. Everything finished earlier than that is committed.
IN_FLIGHT_WINDOW = 5.0
# A killed member holds its partitions until the session timeout (6 s here), and each
# join round on the embedded broker takes 3 s: kills closer together than that keep the
# group rebalancing without end (seen: a partition unowned for 40 s at 2-4 s).
KILL_PAUSE = (5.0, 8.0)
JOB_SLACK = 1.0  # jobs take 3 ms; generous for a loaded machine


def test_repeated_kill_9_loses_nothing(cluster: Callable[..., Cluster]) -> None:
    chaos = cluster(
        CHAOS_VIRTUAL="1",
        CHAOS_LONG_RUNNING="1",
        CHAOS_SLEEP="0.003",
        KAFKA_JOBS_BATCH_SIZE="200",
    )
    chaos.enqueue(JOBS)
    for _ in range(3):
        chaos.start()
    started = time.monotonic()
    deadline = started + 150 * SCALE
    while time.monotonic() < deadline:
        time.sleep(chaos.rng.uniform(*KILL_PAUSE))
        done = ledger.distinct(chaos.ledger)
        progress("kill -9", done, JOBS, started)
        if done >= JOBS:
            break
        chaos.kill(chaos.rng.choice(chaos.live()))
        chaos.start()
    settle(chaos, JOBS)
    runs = ledger.executions(chaos.ledger)
    assert len({r.seq for r in runs}) == JOBS, f"lost {JOBS - len({r.seq for r in runs})}"
    assert set(range(JOBS)) == {r.seq for r in runs}
    assert len(chaos.kills) >= 3, "the backlog finished before the storm did anything"
    ledger.assert_key_order_per_process(runs)
    _assert_duplicates_in_flight(chaos, runs)
    print(f"kills={len(chaos.kills)} executions={len(runs)} duplicates={ledger.duplicates(runs)}")


def _assert_duplicates_in_flight(chaos: Cluster, runs: list[ledger.Execution]) -> None:
    """Every job that ran twice first ran in a process that then died or lost its partition."""
    ends: dict[int, list[tuple[float, int | None]]] = defaultdict(list)  # pid -> (when, partition)
    for pid, when in chaos.kills:
        ends[pid].append((when, None))  # a kill ends every partition of the process
    for pid, when, kind, detail in chaos.events():
        if kind in ("partitions.revoked", "partitions.lost"):
            for _topic, partition in json.loads(detail):
                ends[pid].append((when, partition))
    first: dict[int, ledger.Execution] = {}
    for run in runs:
        first.setdefault(run.seq, run)
    seen: set[int] = set()
    for run in runs:
        if run.seq in seen and run is not first[run.seq]:
            original = first[run.seq]
            # `at` is when the run finished: a job in flight when its partition was
            # revoked finishes after the revocation (long-running jobs carry on).
            assert any(
                original.at - JOB_SLACK <= when <= original.at + IN_FLIGHT_WINDOW
                and partition in (None, original.partition)
                for when, partition in ends[original.pid]
            ), f"job {run.seq} ran again, though its first run ({original}) was not in flight"
        seen.add(run.seq)
