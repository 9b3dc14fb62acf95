"""The figures and the report of bench/virtual_partitions.py: measurements, results, tables.

Also computes how a batch of consecutive jobs splits into lanes under each distribution
(as kafka_jobs/processing/lanes.py does), which the report's notes give.
"""

from __future__ import annotations

import argparse
import statistics
import zlib
from dataclasses import dataclass

from bench import common
from bench.common import Figure, fmt_rate
from bench.throughput import fmt_ratio
from kafka_jobs.processing.lanes import VirtualPartitions

SLEEP = 0.020  # seconds each job sleeps
CONCURRENCY = 32  # worker threads (kafka-jobs) / pool threads (celery)
LANES = 32  # VirtualPartitions(max_partitions=...)
BATCH = 1000  # the worker's batch_size: the most records one batch splits into lanes
IDEAL = CONCURRENCY / SLEEP  # jobs/s
TARGET = 0.85  # share of the ideal (a) should reach, with every key count
HEAD = 0.9  # share of the jobs after which a run's rate is also given (before the drain)
DEFAULT_DISTRIBUTION = VirtualPartitions().distribution  # what (a) measures
NAME = "virtual_partitions"  # the blocks' name in the results file


@dataclass(frozen=True)
class Measurement:
    """One measurement: its tag ("a", "a'", "b", "c"), its key count, its jobs per run."""

    tag: str
    keys: int
    jobs: int

    @property
    def key(self) -> str:
        """Unique name, e.g. "a/64"; (b) and (c) are measured once whatever the keys."""
        return f"{self.tag}/{self.keys}" if self.tag in ("a", "a'") else self.tag

    @property
    def title(self) -> str:
        if self.tag == "a":
            what = (
                f"virtual partitions ({LANES} lanes, default distribution: {DEFAULT_DISTRIBUTION})"
            )
        elif self.tag == "a'":
            what = f"virtual partitions ({LANES} lanes, consistent)"
        elif self.tag == "b":
            what = "no virtual partitions (one lane)"
        else:
            return (
                f"(c) celery, threads pool -c {CONCURRENCY}, kombu confluentkafka://"
                " (polling_interval 0.01 s, wait_time_seconds 0.5 s)"
            )
        return f"({self.tag}) kafka-jobs, {what}, concurrency {CONCURRENCY}"

    @property
    def keys_cell(self) -> str:
        return "any (ignored)" if self.tag == "c" else f"{self.keys:,}"


def plan(args: argparse.Namespace) -> list[Measurement]:
    """Every measurement of a run, in the order they run."""
    out = []
    for keys in args.keys:
        out.append(Measurement("a", keys, args.jobs))
        if not args.no_consistent:
            out.append(Measurement("a'", keys, args.jobs))
    out.append(Measurement("b", args.keys[0], args.one_lane_jobs))
    if not args.no_celery:
        out.append(Measurement("c", args.keys[0], args.celery_jobs))
    return out


class Results:
    """Every run's figure, by measurement key."""

    def __init__(self, measurements: list[Measurement]) -> None:
        self.figures: dict[str, list[Figure]] = {m.key: [] for m in measurements}

    def median(self, key: str) -> float | None:
        rates = [f.rate for f in self.figures.get(key, []) if f.rate is not None]
        return statistics.median(rates) if rates else None

    def head_median(self, key: str) -> float | None:
        """Median rate up to the first HEAD share of the jobs (before the drain)."""
        rates = [
            f.head.rate for f in self.figures.get(key, []) if f.head and f.head.rate is not None
        ]
        return statistics.median(rates) if rates else None

    def tail_median(self, key: str) -> float | None:
        """Median rate of the jobs after the HEAD mark, to the end."""
        rates = [
            (f.jobs - f.head.jobs) / (f.seconds - f.head.seconds)
            for f in self.figures.get(key, [])
            if f.error is None and f.head is not None and f.seconds > f.head.seconds > 0
        ]
        return statistics.median(rates) if rates else None


# --- lanes of one batch, computed (what the notes say the distributions give) ----------


def lane_loads(keys: int, distribution: str, batch: int = BATCH) -> list[int]:
    """Records per lane for a batch of `batch` consecutive jobs keyed `k{i % keys}`.

    As kafka_jobs/processing/lanes.py splits a batch: consistent puts a key on
    crc32(key) % lanes; balanced puts the biggest key groups first on the least-loaded lane.
    """
    groups: dict[str, int] = {}
    for i in range(batch):
        groups[f"k{i % keys}"] = groups.get(f"k{i % keys}", 0) + 1
    load = [0] * LANES
    if distribution == "consistent":
        for key, size in groups.items():
            load[zlib.crc32(key.encode()) % LANES] += size
    else:
        for size in sorted(groups.values(), reverse=True):
            load[load.index(min(load))] += size
    return load


def lanes_note(keys: int, distribution: str) -> str:
    load = lane_loads(keys, distribution)
    used = [n for n in load if n]
    share = sum(load) / LANES / max(load)
    return (
        f"{distribution}: {len(used)} of {LANES} lanes used, {min(used)} to {max(used)}"
        f" records each, at most {share:.0%} of the ideal"
    )


# --- report ---------------------------------------------------------------------------

HEADER = [
    "measurement",
    "keys",
    "jobs per run",
    "jobs/s (median)",
    f"% of ideal ({IDEAL:,.0f}/s)",
    "vs (b)",
    "vs celery (c)",
    f"first {HEAD:.0%} of the jobs: jobs/s (% of ideal)",
]


def fmt_share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{fmt_rate(rate)} ({rate / IDEAL:.1%})"


def table_rows(results: Results, plan_: list[Measurement]) -> list[list[str]]:
    one_lane, celery = results.median("b"), results.median("c")
    rows = []
    for m in plan_:
        rate = results.median(m.key)
        rows.append(
            [
                m.title,
                m.keys_cell,
                str(m.jobs),
                fmt_rate(rate),
                "n/a" if rate is None else f"{rate / IDEAL:.1%}",
                fmt_ratio(rate, one_lane),
                fmt_ratio(rate, celery),
                fmt_share(results.head_median(m.key)),
            ]
        )
    return rows


def target_misses(results: Results, args: argparse.Namespace) -> list[int]:
    """The key counts at which (a) stayed below the target (or failed)."""
    return [
        k for k in args.keys if (rate := results.median(f"a/{k}")) is None or rate < TARGET * IDEAL
    ]


def summary_cells(
    date: str, load_average: str, args: argparse.Namespace, results: Results
) -> list[list[str]]:
    """The headline figures of this run, for the side-by-side table of every broker."""
    cells = []
    for m in plan(args):
        if m.tag == "c":
            cells.append(
                ["(c) celery -c 32, confluentkafka:// tuned", fmt_share(results.median("c"))]
            )
            cells.append(["(c) celery, first 90% of the jobs", fmt_share(results.head_median("c"))])
            continue
        label = {
            "a": f"(a) 32 lanes, default ({DEFAULT_DISTRIBUTION})",
            "a'": "(a') 32 lanes, consistent",
            "b": "(b) no virtual partitions (one lane)",
        }[m.tag]
        cells.append(
            [
                label if m.tag == "b" else f"{label}, {m.keys:,} keys",
                fmt_share(results.median(m.key)),
            ]
        )
    if not args.no_celery:
        cells.append(
            [
                "(a) / (c)",
                ", ".join(
                    f"{fmt_ratio(results.median(f'a/{k}'), results.median('c'))} ({k:,} keys)"
                    for k in args.keys
                ),
            ]
        )
    misses = target_misses(results, args)
    cells += [
        [
            f"**(a) >= {TARGET:.0%} of ideal with every key count**",
            "met" if not misses else "MISSED at " + ", ".join(f"{k:,} keys" for k in misses),
        ],
        ["date", date],
        ["load average (1 min) at start / end", load_average],
        ["runs", str(args.runs)],
    ]
    return cells


def notes(results: Results, args: argparse.Namespace) -> list[str]:
    out = [
        f"ideal = {CONCURRENCY} threads / {SLEEP * 1000:.0f} ms = {IDEAL:,.0f} jobs/s;"
        f" target for (a): >= {TARGET:.0%} of it ({TARGET * IDEAL:,.0f} jobs/s) with every"
        " key count.",
        "each run is timed from the first job's start to the N-th job's end (its 20 ms"
        " sleep returned), rate = N / that time; the consumer-group join (about 3 s on"
        " Tansu, less on Apache Kafka; shown as 'first job ... after start' in the details)"
        " is excluded. Celery counts its one warm-up job too (N+1 jobs).",
        f"kafka-jobs regular (blocking) topics fetch the next batch of a partition only"
        f" when its whole batch (up to batch_size = {BATCH} records) has finished, so a"
        " batch lasts as long as its longest lane: per-key order holds across batches.",
    ]
    for keys in args.keys:
        out.append(
            f"a batch of {BATCH} consecutive jobs with {keys:,} keys: "
            + "; ".join(lanes_note(keys, d) for d in ("balanced", "consistent"))
            + " (computed here as kafka_jobs/processing/lanes.py splits)."
        )
    out += [
        "(b) runs one partition's batch as one job, records one after another: about"
        f" 1 / {SLEEP * 1000:.0f} ms = {1 / SLEEP:.0f} jobs/s whatever the concurrency.",
        "(c) celery ignores the record key: its 32 pool threads run any jobs in parallel"
        " (no per-key order). kombu acks every message with a synchronous commit from the"
        " pool thread while the worker's main thread polls the same consumer (see the notes"
        " of bench/throughput.py); the tuned transport options leave gaps between polls.",
        "the machine's 2 CPUs are shared by the broker, the benchmark process and the celery"
        " worker subprocess.",
    ]
    celery_tail = results.tail_median("c")
    if celery_tail is not None:
        vp_tail = results.tail_median(f"a/{args.keys[0]}")
        out.append(
            f"drain: the last {1 - HEAD:.0%} of the jobs ran at a median"
            f" {fmt_rate(celery_tail)} under celery ({fmt_rate(vp_tail)} under (a),"
            f" {args.keys[0]:,} keys). In a separate check (2026-11-22, N = 300, counter"
            " read every 0.5 s), celery ran its last ~130 jobs (its prefetch window,"
            " 32 x 4) 32 every 0.5 s = wait_time_seconds: consistent with the ack commits"
            " of the 32 pool threads getting through only between polls, which block for"
            " wait_time_seconds once the topic is empty. So celery's whole-run rate depends"
            " on N; the 'first 90%' column leaves the drain out.",
        )
    stalled = [f for f in results.figures.get("c", []) if f.note]
    if stalled:
        out.append(
            f"{len(stalled)} of {len(results.figures['c'])} celery runs did not complete: "
            + "; ".join(f.note or "" for f in stalled)
        )
    return out


def section(
    handle: common.BrokerHandle,
    invocation: common.Invocation,
    load_average: str,
    args: argparse.Namespace,
    results: Results,
) -> str:
    """This run's full report: a `###` section of the results file for this broker."""
    plan_ = plan(args)
    out = [
        f"### On {handle.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- broker: {handle.description}",
        f"- key counts: {', '.join(f'{k:,}' for k in args.keys)}; runs: {args.runs},"
        f" interleaved ({', '.join(m.key for m in plan_)} in each run)",
        "",
        f"#### Medians of {args.runs} runs ({handle.name})",
        "",
        common.markdown_table(HEADER, table_rows(results, plan_)),
        "",
        f"#### Per run (jobs/s, {handle.name})",
        "",
    ]
    per_run = []
    for m in plan_:
        cells = [
            "FAILED"
            if f.error
            else fmt_rate(f.rate)
            + (f" (first {HEAD:.0%}: {fmt_rate(f.head.rate)})" if f.head else "")
            + (" *" if f.note else "")
            for f in results.figures[m.key]
        ]
        per_run.append([m.key, *cells, *[""] * (args.runs - len(cells))])
    out += [
        common.markdown_table(
            ["measurement", *(f"run {r + 1}" for r in range(args.runs))], per_run
        ),
        "",
    ]
    out += common.details(
        ((f"({m.key})", results.figures[m.key]) for m in plan_), "did not complete"
    )
    out += common.notes_list(notes(results, args))
    return "\n".join(out)
