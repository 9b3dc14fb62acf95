"""Repeated kill -9 of random workers until the backlog is done: nothing lost."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests import ledger
from tests.chaos.conftest import SCALE, Cluster, progress, settle

JOBS = int(20_000 * SCALE)
# A killed member holds its partitions until the session timeout (6 s here), and each
# join round on the embedded broker takes 3 s: kills closer together than that keep the
# group rebalancing without end (seen: a partition unowned for 40 s at 2-4 s).
KILL_PAUSE = (5.0, 8.0)
MIN_KILLS = 3
TOP_UPS = 3  # the backlog grows to at most 3 x JOBS


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
    total, started = JOBS, time.monotonic()
    deadline = started + 150 * SCALE
    while time.monotonic() < deadline:
        time.sleep(chaos.rng.uniform(*KILL_PAUSE))
        done = ledger.distinct(chaos.ledger)
        progress("kill -9", done, total, started)
        if len(chaos.kills) >= MIN_KILLS and done >= total:
            break
        # A fast broker drains the backlog between a few kills: more work, so every
        # kill lands mid-backlog (bounded: at most TOP_UPS more batches).
        if len(chaos.kills) < MIN_KILLS and done >= total * 0.7 and total < JOBS * TOP_UPS:
            chaos.enqueue(JOBS // 2, start=total)
            total += JOBS // 2
        chaos.kill(chaos.rng.choice(chaos.live()))
        chaos.start()
    settle(chaos, total)
    runs = ledger.executions(chaos.ledger)
    assert len({r.seq for r in runs}) == total, f"lost {total - len({r.seq for r in runs})}"
    assert set(range(total)) == {r.seq for r in runs}
    assert len(chaos.kills) >= MIN_KILLS, "the backlog finished before the storm did enough"
    ledger.assert_order_per_process(runs, by="key", replays=True)
    _assert_duplicates_in_flight(chaos, runs)
    print(f"kills={len(chaos.kills)} executions={len(runs)} duplicates={ledger.duplicates(runs)}")


def _assert_duplicates_in_flight(chaos: Cluster, runs: list[ledger.Execution]) -> None:
    """Every job that ran twice was not covered by a commit of the process that first ran it.

    A successful commit past a record means a later owner starts after it: running it
    again would be a bug. Commits that fail (e.g. ILLEGAL_GENERATION while the group
    waits out a killed member's session) cover nothing, however long that takes.
    """
    covered: dict[tuple[int, int], int] = {}  # (pid, partition) -> highest committed offset
    for pid, _when, kind, detail in chaos.events():
        if kind == "offsets.committed":
            for name, offset in json.loads(detail).items():
                partition = int(name.rsplit("[", 1)[1].rstrip("]"))
                key = (pid, partition)
                covered[key] = max(covered.get(key, -1), int(offset))
    first: dict[int, ledger.Execution] = {}
    for run in runs:
        if run.seq in first and run is not first[run.seq]:
            original = first[run.seq]
            mark = covered.get((original.pid, original.partition), -1)
            assert mark <= original.offset, (
                f"job {run.seq} ran again, though its first run ({original}) was committed"
                f" (offset {mark})"
            )
        first.setdefault(run.seq, run)
