"""A 200 000-job backlog does not grow a worker's memory: fetching is bounded by settings.

Bounds: the worker fetches at most `batch_size` records per poll and only while its jobs
queue has room; librdkafka prefetches at most `queued.max.messages.kbytes` per consumer.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests import ledger
from tests.chaos.conftest import SCALE, Cluster

BACKLOG = int(200_000 * SCALE)
PREFETCH_KB = 8_192
SAMPLE_SECONDS = 30.0 * SCALE
# Measured here: ~95 MiB once running (interpreter, librdkafka, dill, SQLite), moving
# between 95 and 107 MiB as allocator arenas and the ledger's WAL come and go.
PEAK_MIB = 150


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_backlog_does_not_grow_worker_memory(cluster: Callable[..., Cluster]) -> None:
    chaos = cluster(
        CHAOS_SLEEP="0.001",
        KAFKA_JOBS_BATCH_SIZE="500",
        KAFKA_JOBS_CONSUMER_QUEUED_MAX_MESSAGES_KBYTES=str(PREFETCH_KB),
    )
    chaos.enqueue(BACKLOG, keys=1000)
    worker = chaos.start()
    deadline = time.monotonic() + 60
    while ledger.distinct(chaos.ledger) < 1000 and time.monotonic() < deadline:
        time.sleep(0.2)  # up and running (group joined, first batches done)
    samples: list[float] = []
    end = time.monotonic() + SAMPLE_SECONDS
    while time.monotonic() < end:
        samples.append(_rss_mib(worker.pid))
        time.sleep(0.25)
    done = ledger.distinct(chaos.ledger)
    assert done < BACKLOG // 2, "the backlog ran down during the measurement; slow the jobs"
    third = len(samples) // 3
    early = statistics.median(samples[:third])
    late = statistics.median(samples[-third:])
    print(
        f"backlog={BACKLOG} ran={done} rss median first third={early:.1f} MiB, "
        f"last third={late:.1f} MiB, peak={max(samples):.1f} MiB"
    )
    # Flat: the last third of the run is not above the first (the backlog stays huge).
    assert late <= early + 16, (early, late)
    # And small: nowhere near what 200 000 records would take.
    assert max(samples) < PEAK_MIB, max(samples)
