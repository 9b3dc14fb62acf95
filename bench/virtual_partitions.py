"""Virtual partitions: 20 ms jobs on ONE partition, few and many keys, with and without lanes.

    python -m bench.virtual_partitions [--broker embedded|apache] [--keys 64,4000]
        [--jobs N] [--runs R] [--no-celery] [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` (default
embedded Tansu; apache: one Apache Kafka KRaft node) and stops it at the end
(`bench.common.broker`). Every run uses a fresh topic of ONE partition pre-filled with
jobs keyed `k{i % K}` (K distinct keys, for each K of `--keys`) whose body sleeps 20 ms,
and a fresh consumer group. Each run of each measurement is timed from the moment the
first job starts to the moment the N-th job finishes (group join and start-up
excluded), the rate is N over that time, and the medians of `--runs` runs are
reported. The rate up to the first 90 % of the jobs is also given: it leaves out how a
worker drains the end of the topic. Measurements, interleaved within each run:

(a) kafka-jobs, virtual partitions at the default distribution (balanced since issue
    21): `app.configure_topic(topic, virtual_partitions=VirtualPartitions(max_partitions
    =32), retries=1)`, `app.worker(concurrency=32)`, `--jobs` jobs; once per key count.
(a') the same with `distribution="consistent"` (a key always on the same lane, crc32 of
    the key), once per key count; `--no-consistent` skips it.
(b) kafka-jobs, the same load without virtual partitions (one lane per partition: one
    job at a time), `--one-lane-jobs` jobs, keys of the first key count.
(c) Celery through kombu's `confluentkafka://` transport, `celery worker --pool
    threads -c 32` (`bench/celery_app.py`), transport options polling_interval 0.01 s
    and wait_time_seconds 0.5 s; once per run (Celery ignores keys); bounded in time and
    stopped after 10 s without progress, the rate is then over the jobs that ran.
    `--celery-jobs` jobs (default 8000 like (a): Celery drains the last jobs slowly, so
    a smaller N lowers its whole-run rate).

The ideal is 32 threads / 20 ms = 1600 jobs/s; the target for (a) is >= 85 % of it with
every key count (issue 21: 64 and 4000 keys). The report replaces this broker's block of
`--out` and rebuilds the side-by-side table of every broker
(`bench.common.record_side_by_side`; `--out -` writes nothing); the tables, the notes
and the lanes each distribution gives a batch are in `bench/virtual_partitions_report.py`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import common
from bench.common import Figure, describe
from bench.throughput import (
    CELERY_TUNED_OPTIONS,
    Meter,
    celery_broker_url,
    celery_enqueue,
    celery_worker,
    make_app,
    prefill,
    register,
    time_worker,
)
from bench.virtual_partitions_report import (
    CONCURRENCY,
    HEAD,
    HEADER,
    IDEAL,
    LANES,
    NAME,
    SLEEP,
    TARGET,
    Measurement,
    Results,
    plan,
    section,
    summary_cells,
    table_rows,
    target_misses,
)
from kafka_jobs.processing.lanes import VirtualPartitions

PROGRESS_EVERY = 2.0  # seconds between progress lines while a worker runs

# --- kafka-jobs -------------------------------------------------------------------


class StartMeter(Meter):
    """A `Meter` that also notes when the first job started; runs are timed from it.

    Timing from the first job's start (not its end) counts all N jobs without the
    head start of the first lanes' jobs, which all end about together.
    """

    def __init__(self, target: int, mark: int) -> None:
        super().__init__(target)
        self.first_start = 0.0
        self.mark = mark
        self.mark_time = 0.0
        self._starts = itertools.count(1)
        self._ends = itertools.count(1)

    def begin(self) -> None:
        if next(self._starts) == 1:  # atomic under the GIL
            self.first_start = time.perf_counter()

    def hit(self) -> None:
        if next(self._ends) == self.mark:
            self.mark_time = time.perf_counter()
        super().hit()

    def figure(self, started: float) -> Figure:
        return Figure(
            jobs=self.target,
            seconds=self.last - self.first_start,
            startup=self.first_start - started,
            head=Figure(jobs=self.mark, seconds=self.mark_time - self.first_start),
        )


def head_mark(n: int) -> int:
    """The job count up to which a run's rate is also given."""
    return max(1, int(n * HEAD))


def wait_for(meter: Meter, timeout: float, tag: str, crashed: Callable[[], bool]) -> bool:
    """Wait until the meter is done (True), printing progress; False on timeout or crash."""
    deadline = time.monotonic() + timeout
    while not meter.done.wait(max(0.0, min(PROGRESS_EVERY, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or crashed():
            return False
        common.progress(f"    {tag}: {meter.seen} of {meter.target} jobs done")
    return True


def kafka_jobs_run(
    bootstrap: str, m: Measurement, virtual: VirtualPartitions | None, timeout: float, tag: str
) -> Figure:
    """Pre-fill one partition with `m.jobs` jobs, run them with a 32-thread worker, time them."""
    topic = common.create_topic(bootstrap, "bench-vp", 1)
    prefill(bootstrap, topic, m.jobs, m.keys)
    app = make_app(bootstrap, common.unique("bench-g-vp"))
    # retries=1: virtual partitions with a dead-letter topic need a retry (Worker checks it).
    app.configure_topic(topic, virtual_partitions=virtual or False, retries=1)
    meter = StartMeter(m.jobs, head_mark(m.jobs))

    def body() -> None:
        meter.begin()
        time.sleep(SLEEP)
        meter.hit()

    register(app, topic, body)
    return time_worker(
        app,
        meter,
        timeout,
        CONCURRENCY,
        wait=lambda worker: wait_for(meter, timeout, tag, lambda: worker.crashed is not None),
    )


def celery_run(bootstrap: str, n: int, timeout: float, workdir: Path) -> Figure:
    """Pre-fill a one-partition queue with `n` jobs (+1 warm-up), run a tuned -c 32 worker."""
    broker_url = celery_broker_url(bootstrap)
    queue = common.create_topic(bootstrap, "bench-vp-celery", 1)
    fill = celery_enqueue(broker_url, queue, n, timeout)
    if fill.error is not None:
        return Figure(error=f"pre-fill failed: {fill.error}")
    return celery_worker(
        broker_url,
        queue,
        n + 1,  # celery_enqueue sends one warm-up job first
        CELERY_TUNED_OPTIONS,
        timeout,
        workdir,
        concurrency=CONCURRENCY,
        sleep=SLEEP,
        mark=head_mark(n + 1),
        progress_every=PROGRESS_EVERY,
    )


# --- main -------------------------------------------------------------------------------


def key_counts(text: str) -> list[int]:
    """`--keys`: a comma-separated list of distinct key counts, each at least 1."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct key counts of at least 1, not {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser(
        "bench.virtual_partitions",
        __doc__,
        8000,
        "jobs per run of (a) and (a')",
        appends=False,
    )
    parser.add_argument(
        "--keys",
        type=key_counts,
        default=[64, 4000],
        help="distinct record keys, a list: (a) and (a') run once per count (default 64,4000)",
    )
    common.add_options(
        parser,
        ("--one-lane-jobs", 500, "jobs per run of (b)"),
        ("--celery-jobs", 8000, "jobs per run of (c)"),
        ("--no-celery", False, "skip (c)"),
        ("--no-consistent", False, "skip (a'), the consistent distribution"),
        ("--timeout", 60.0, "seconds allowed per kafka-jobs worker run"),
        ("--celery-timeout", 60.0, "seconds allowed per celery step"),
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.one_lane_jobs, args.celery_jobs) < 2 or args.runs < 1:
        parser.error("job counts must be at least 2, --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.virtual_partitions")
    plan_ = plan(args)
    results = Results(plan_)
    distributions: dict[str, VirtualPartitions | None] = {
        "a": VirtualPartitions(max_partitions=LANES),  # the default distribution
        "a'": VirtualPartitions(max_partitions=LANES, distribution="consistent"),
        "b": None,
    }
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        bootstrap = handle.bootstrap
        common.progress(f"broker: {handle.description} at {bootstrap}")
        for r in range(args.runs):
            for m in plan_:
                label = f"[run {r + 1}/{args.runs}] ({m.key})"
                common.progress(f"{label} {m.jobs} jobs ...")
                try:
                    if m.tag == "c":
                        figure = celery_run(bootstrap, m.jobs, args.celery_timeout, Path(tmp))
                    else:
                        virtual = distributions[m.tag]
                        figure = kafka_jobs_run(bootstrap, m, virtual, args.timeout, label)
                except Exception as exc:
                    figure = Figure(error=repr(exc))
                results.figures[m.key].append(figure)
                share = "" if figure.rate is None else f", {figure.rate / IDEAL:.1%} of ideal"
                common.progress(f"{label} {describe(figure)}{share}")
    load_average = invocation.load_average()
    print()
    print(common.text_table(HEADER, table_rows(results, plan_)))
    misses = target_misses(results, args)
    print(
        f"\n(a) target >= {TARGET:.0%} of ideal with every key count:"
        f" {'met' if not misses else f'MISSED at {misses} keys'}"
    )
    common.record_side_by_side(
        args.out,
        NAME,
        handle.kind,
        handle.name,
        section(handle, invocation, load_average, args, results),
        summary_cells(invocation.date, load_average, args, results),
    )
    failed = any(f.error is not None for m in plan_ if m.tag != "c" for f in results.figures[m.key])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
