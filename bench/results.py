"""Job results (issue 20): delay-to-get round trips, and what keep_result costs in throughput.

    python -m bench.results [--broker embedded|apache] [--calls 200] [--callers 8]
        [--concurrent-calls 400] [--jobs 50000] [--keep-jobs 3000] [--runs 3]
        [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` and stops
it at the end: embedded (default; Tansu) or apache (one Apache Kafka KRaft node).

Round trip (milliseconds, one clock): from just before ``handle = job.delay(i)`` to the
return of ``handle.get()``, for a job that returns `i` (checked) and keeps its result.
The worker is a subprocess, ``python -m kafka_jobs worker -A bench.results_app`` at its
defaults (4 threads), on a fresh job topic of 6 partitions
and a fresh results topic (created by the worker, 6 partitions, compacted). The calls
are made `--calls` times one after the other ("sequential"), then `--concurrent-calls`
times by `--callers` threads at once, each calling one after the other ("concurrent";
they share the process's one results reader). The yardstick is the same round trip in
raw confluent-kafka on the same broker: the caller produces a record (a fresh key) to a
request topic and waits for the reply with that key, read by one consumer thread
assigned to every partition of a reply topic; a subprocess
(``python -m bench.results_app raw``) answers each request on the reply topic, with a
consumer looping either `poll(0.1)` (the client's quickest, "raw poll()"; the listener
has fetched like this since 27498bf: the first record, then what is already fetched) or
`consume(1000, 0.1)` (the listener's fetch before that, "raw consume()"). Every
side uses the kafka-jobs producer and consumer settings (linger.ms 5). Before timing,
probe calls (0.5 s each, bounded by `--ready-timeout`) wait until the worker answers,
then `--warmup` calls are made untimed. p50 / p99 / max are nearest-rank per run; the
report gives their medians over `--runs` runs.

Throughput (jobs/s, as `bench/throughput.py` measures them, medians of `--runs` runs):

enqueue
    `task.delay(i, key)` `--jobs` times then `app.flush()`, with the task's
    ``keep_result`` off and on; the raw producer loop of `bench.throughput.enqueue_raw`.
worker
    a topic of 6 partitions pre-filled with no-op jobs (`--jobs`; `--keep-jobs` for
    keep_result on, which runs far slower); an in-process `app.worker(concurrency=4)`
    with the task's ``keep_result`` off and on (a fresh results topic per run), timed
    from the first job run to the last; the raw
    `consume(1000, 0.1)` loop of `bench.throughput.worker_raw`. With keep_result on,
    every job's final outcome is then looked for in the results topic (untimed): a run
    in which one is missing fails.

The report replaces this broker's block of `--out` and rebuilds the table of every
broker side by side (`bench.common.record_side_by_side`; `--out -` writes nothing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench import common
from bench.common import Figure, Results, describe, fmt_rate
from bench.latency import fmt_ms, fmt_x
from bench.results_roundtrip import (
    CONC,
    KJ,
    PARTITIONS,
    RAW_BATCH,
    RAW_POLL,
    RT_SIDES,
    SEQ,
    Figures,
    RoundTripRun,
    RoundTrips,
    bench_settings,
    measure_round_trips,
)
from bench.throughput import (
    KEYS,
    Meter,
    deadline_passed,
    enqueue_raw,
    prefilled_topic,
    time_worker,
    worker_raw,
)
from kafka_jobs.app import App
from kafka_jobs.results import Outcome

NAME = "results"
SECTION = "## Results: delay-to-get round trip and keep_result cost (bench/results.py)"
CONCURRENCY = 4  # the worker's default thread count
RT_TITLES = {
    KJ: "kafka-jobs: delay() + get() (worker, 4 threads)",
    RAW_POLL: "raw confluent-kafka, replier poll(0.1)",
    RAW_BATCH: "raw confluent-kafka, replier consume(1000, 0.1)",
}
OFF, ON, RAW = "keep_result off", "keep_result on", "raw"
TP_SIDES = (OFF, ON, RAW)
ENQUEUE, WORKER = "enqueue", "worker"


# --- throughput with keep_result off and on -------------------------------------------------


def noop_task(app: App, topic: str, keep: bool, body: Callable[[], None] | None = None) -> Any:
    """`bench.noop(i, key)` on `topic` (the record of `bench.throughput`), keep_result `keep`."""
    run = body or (lambda: None)

    def noop(i: int, key: str) -> None:
        run()

    return app.job(topic=topic, key="key", name="bench.noop", keep_result=keep)(noop)


def enqueue_kafka_jobs(bootstrap: str, n: int, timeout: float, keep: bool) -> Figure:
    """`n` delay() calls then a flush, timed (as `bench.throughput.enqueue_kafka_jobs`)."""
    topic = common.create_topic(bootstrap, "bench-res-enq", PARTITIONS)
    app = App(bench_settings(bootstrap))
    noop = noop_task(app, topic, keep)
    app.producer.client.list_topics(topic, timeout=10)
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    for i in range(n):
        if deadline_passed(i, deadline):
            return Figure(error=f"only {i} of {n} enqueued within {timeout}s")
        noop.delay(i, f"k{i % KEYS}")
    loop = time.perf_counter() - started
    app.flush(max(1.0, deadline - time.monotonic()))
    return Figure(jobs=n, seconds=time.perf_counter() - started, loop=loop)


def worker_kafka_jobs(bootstrap: str, n: int, timeout: float, keep: bool) -> Figure:
    """An in-process worker on `n` pre-filled no-op jobs; with `keep`, outcomes checked after."""
    topic = prefilled_topic(bootstrap, "bench-res-work", n)
    results_topic = common.unique("bench-res-results")
    app = App(
        bench_settings(
            bootstrap, group_id=common.unique("bench-res-work-g"), results_topic=results_topic
        )
    )
    meter = Meter(n)
    noop_task(app, topic, keep, meter.hit)
    figure = time_worker(app, meter, timeout, CONCURRENCY)
    if keep and figure.error is None:
        found = final_outcomes(bootstrap, results_topic, n, 60.0)
        figure.note = f"{found} of {n} final outcomes in the results topic"
        if found < n:
            figure.error = figure.note
    app.close(10)
    return figure


def final_outcomes(bootstrap: str, topic: str, expected: int, timeout: float) -> int:
    """Distinct job ids with a final outcome in `topic`, read until `expected` or `timeout`."""
    consumer = Consumer(
        {
            **bench_settings(bootstrap).consumer_settings(common.unique("bench-res-check")),
            "enable.partition.eof": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        done: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(done) < expected and time.monotonic() < deadline:
            for record in consumer.consume(1000, 0.2):
                error = record.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic}: {error}")
                value = record.value()
                if error is None and value:
                    outcome = Outcome.decode(value)
                    if outcome.ready:
                        done.add(outcome.job_id)
        return len(done)
    finally:
        consumer.close()


# --- the report -----------------------------------------------------------------------------


RT_HEADER = ["side", "p50", "p99", "max", "p50 / raw poll()", "p99 / raw poll()"]


def rt_rows(figures: Figures, mode: str) -> list[list[str]]:
    raw50, raw99 = figures.median(RAW_POLL, mode, 0.5), figures.median(RAW_POLL, mode, 0.99)
    rows = []
    for side in RT_SIDES:
        p50, p99 = figures.median(side, mode, 0.5), figures.median(side, mode, 0.99)
        rows.append(
            [
                RT_TITLES[side],
                fmt_ms(p50),
                fmt_ms(p99),
                fmt_ms(figures.median(side, mode, 1.0)),
                fmt_x(p50, raw50),
                fmt_x(p99, raw99),
            ]
        )
    return rows


TP_HEADER = [
    "measurement",
    OFF,
    ON,
    "on / off",
    "raw confluent-kafka",
    "off / raw",
    "on / raw",
]


def ratio(a: float | None, b: float | None) -> str:
    """`a / b` as a percentage (two decimals below 1 %, so a collapse does not read 0 %)."""
    if a is None or b is None or b == 0:
        return "n/a"
    value = a / b
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2%}" if value < 0.01 else f"{value:.0%}"


def tp_rows(results: Results) -> list[list[str]]:
    rows = []
    for title, measurement in (
        ("enqueue: delay() x N + flush", ENQUEUE),
        ("enqueue calls alone (before the flush)", "enqueue-calls"),
        ("worker: no-op jobs, 4 threads", WORKER),
    ):
        off, on, raw = (results.median(measurement, side) for side in TP_SIDES)
        rows.append(
            [
                title,
                fmt_rate(off),
                fmt_rate(on),
                ratio(on, off),
                fmt_rate(raw),
                ratio(off, raw),
                ratio(on, raw),
            ]
        )
    return rows


def summary_cells(
    invocation: common.Invocation,
    load_average: str,
    args: argparse.Namespace,
    figures: Figures,
    results: Results,
) -> list[list[str]]:
    """The headline figures of this run, for the side-by-side table of every broker."""
    cells = []
    for mode, who in ((SEQ, "1 caller"), (CONC, f"{args.callers} callers")):
        for side in RT_SIDES:
            p50, p99 = figures.median(side, mode, 0.5), figures.median(side, mode, 0.99)
            cells.append([f"round trip, {who}: {side} p50 / p99", f"{fmt_ms(p50)} / {fmt_ms(p99)}"])
        kj50, raw50 = figures.median(KJ, mode, 0.5), figures.median(RAW_POLL, mode, 0.5)
        cells.append([f"round trip, {who}: **kafka-jobs / raw poll()** p50", fmt_x(kj50, raw50)])
    for label, measurement in (("enqueue", ENQUEUE), ("worker", WORKER)):
        off, on, raw = (results.median(measurement, side) for side in TP_SIDES)
        cells += [
            [f"{label}: keep_result off / on", f"{fmt_rate(off)} / {fmt_rate(on)}"],
            [f"{label}: **on / off**", ratio(on, off)],
            [f"{label}: raw confluent-kafka; on / raw", f"{fmt_rate(raw)}; {ratio(on, raw)}"],
        ]
    cells += [
        ["date", invocation.date],
        ["kafka-jobs source", common.source_state()],
        ["load average (1 min) at start / end", load_average],
        [
            "calls (1 caller; concurrent) x jobs x runs",
            f"{args.calls}; {args.concurrent_calls} x {args.jobs:,} ({args.keep_jobs:,} worker"
            f" keep_result on) x {args.runs}",
        ],
    ]
    return cells


def section(
    handle: common.BrokerHandle,
    invocation: common.Invocation,
    load_average: str,
    args: argparse.Namespace,
    figures: Figures,
    results: Results,
) -> str:
    """This run's full report, a `###` section for this broker."""
    out = [
        f"### On {handle.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- broker: {handle.description}",
        f"- round trips per run and side: {args.warmup} warm-up, {args.calls} sequential,"
        f" {args.concurrent_calls} by {args.callers} caller threads; throughput: {args.jobs:,}"
        f" jobs per run and side ({args.keep_jobs:,} for the worker with keep_result on);"
        f" {args.runs} runs; topics of {PARTITIONS} partitions",
        "",
        f"#### Delay-to-get round trip, 1 caller (medians of {args.runs} runs, {handle.name})",
        "",
        common.markdown_table(RT_HEADER, rt_rows(figures, SEQ)),
        "",
        f"#### Round trip, {args.callers} concurrent callers (medians, {handle.name})",
        "",
        common.markdown_table(RT_HEADER, rt_rows(figures, CONC)),
        "",
        f"#### Throughput, keep_result off and on (medians of {args.runs} runs, jobs/s)",
        "",
        common.markdown_table(TP_HEADER, tp_rows(results)),
        "",
        "Details:",
        "",
    ]
    for (side, mode), runs in figures.runs.items():
        out += [
            f"- round trip {side} {mode} run {r + 1}: {t.describe()}" for r, t in enumerate(runs)
        ]
    startups = {s: statistics.median(v) for s, v in figures.startups.items() if v}
    out.append(
        "- worker start to first answered probe (median): "
        + ", ".join(f"{side} {seconds:.1f} s" for side, seconds in startups.items())
    )
    for measurement in (ENQUEUE, WORKER):
        for side in TP_SIDES:
            out += [
                f"- {measurement} {side} run {r + 1}: {describe(f)}"
                for r, f in enumerate(results.figures[measurement][side])
            ]
    out += common.notes_list(notes(handle.kind))
    return "\n".join(out)


def notes(kind: str) -> list[str]:
    out = [
        "round trip = the caller's `time.perf_counter()` from before `delay()` / `produce()` to"
        " the return of `get()` / the reply's arrival: the producer's linger (5 ms), the"
        " worker's fetch, the job, the outcome's write (5 ms linger again) and the caller's"
        " fetch of it.",
        "raw poll() returns each record as soon as it is fetched: the client's floor, and"
        " the kafka-jobs listener's way since 27498bf (`poll()` for the first record, then"
        " `consume(n, 0)` for what is already fetched). raw consume() makes the call the"
        " listener made before, `consume(1000, 0.1)`, which returns when it has 1000 records"
        " or 0.1 s has passed: a lone record waits the rest of the 0.1 s.",
        "the caller, the worker subprocess and the broker share the machine's 2 CPUs; other"
        " engineers' test runs shared them too (the load average is given).",
    ]
    if kind == "embedded":
        out.append(
            "Tansu completes a group join after about half of session.timeout.ms: the probe"
            " calls absorb it (worker start to first answer in the details)."
        )
    return out


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser(
        "bench.results", __doc__, 50_000, "jobs per throughput run and side", appends=False
    )
    common.add_options(
        parser,
        ("--keep-jobs", 3000, "jobs per worker run with keep_result on"),
        ("--calls", 200, "sequential round trips per run and side"),
        ("--callers", 8, "caller threads of the concurrent round trips"),
        ("--concurrent-calls", 400, "round trips per run and side, over all caller threads"),
        ("--warmup", 20, "untimed round trips after the worker answered, per run and side"),
        ("--call-timeout", 10.0, "seconds one round trip may take"),
        ("--ready-timeout", 60.0, "seconds to wait for a worker to answer its first probe"),
        ("--timeout", 120.0, "seconds allowed per throughput step"),
        ("--no-throughput", False, "round trips only"),
        ("--logs", "", "directory for the worker logs (default: a temporary one)"),
    )
    args = parser.parse_args(argv)
    if min(args.calls, args.callers, args.concurrent_calls, args.runs) < 1:
        parser.error("--calls, --callers, --concurrent-calls and --runs must be at least 1")
    if min(args.jobs, args.keep_jobs) < 2:
        parser.error("--jobs and --keep-jobs must be at least 2")
    return args


def run_once(
    tag: str,
    bootstrap: str,
    args: argparse.Namespace,
    figures: Figures,
    results: Results,
    workdir: Path,
) -> None:
    """One run: the round trips of every side, then the throughput steps."""
    for side in RT_SIDES:
        common.progress(f"{tag} round trip {side} ...")
        try:
            run = measure_round_trips(side, bootstrap, args, workdir)
        except Exception as exc:
            failed = RoundTrips(expected=args.calls, error=repr(exc))
            run = RoundTripRun(failed, failed)
        figures.runs[(side, SEQ)].append(run.sequential)
        figures.runs[(side, CONC)].append(run.concurrent)
        if run.startup is not None:
            figures.startups[side].append(run.startup)
        common.progress(f"{tag} round trip {side} {SEQ}: {run.sequential.describe()}")
        common.progress(f"{tag} round trip {side} {CONC}: {run.concurrent.describe()}")
    if args.no_throughput:
        return
    n, timeout = args.jobs, args.timeout
    steps: list[tuple[str, str, Callable[[], Figure]]] = [
        (ENQUEUE, OFF, lambda: enqueue_kafka_jobs(bootstrap, n, timeout, False)),
        (ENQUEUE, ON, lambda: enqueue_kafka_jobs(bootstrap, n, timeout, True)),
        (ENQUEUE, RAW, lambda: enqueue_raw(bootstrap, n, timeout)),
        (WORKER, OFF, lambda: worker_kafka_jobs(bootstrap, n, timeout, False)),
        (WORKER, ON, lambda: worker_kafka_jobs(bootstrap, args.keep_jobs, timeout, True)),
        (WORKER, RAW, lambda: worker_raw(bootstrap, n, timeout)),
    ]
    for measurement, side, step in steps:
        calls = "enqueue-calls" if measurement == ENQUEUE else None
        results.measure(tag, measurement, side, step, calls)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.results")
    figures = Figures()
    results = Results((ENQUEUE, "enqueue-calls", WORKER), TP_SIDES)
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        common.progress(f"broker: {handle.description} at {handle.bootstrap}")
        if not args.no_throughput:
            common.progress("warm-up (untimed): 2000 jobs through the kafka-jobs and raw producers")
            enqueue_kafka_jobs(handle.bootstrap, 2000, args.timeout, False)
            enqueue_raw(handle.bootstrap, 2000, args.timeout)
        for r in range(args.runs):
            run_once(
                f"[run {r + 1}/{args.runs}]", handle.bootstrap, args, figures, results, workdir
            )
    load_average = invocation.load_average()
    print()
    print(f"broker: {handle.description}")
    for mode in (SEQ, CONC):
        print(f"round trip, {mode}:")
        print(common.text_table(RT_HEADER, rt_rows(figures, mode)))
    if not args.no_throughput:
        print(common.text_table(TP_HEADER, tp_rows(results)))
    if str(args.out) != "-":
        ensure_section(args.out)
    common.record_side_by_side(
        args.out,
        NAME,
        handle.kind,
        handle.name,
        section(handle, invocation, load_average, args, figures, results),
        summary_cells(invocation, load_average, args, figures, results),
    )
    failed = any(run.error for runs in figures.runs.values() for run in runs) or any(
        f.error is not None
        for m in (ENQUEUE, WORKER)
        for s in TP_SIDES
        for f in results.figures[m][s]
    )
    return 1 if failed else 0


def ensure_section(path: Path) -> None:
    """The section and its (empty) blocks, before "Earlier runs", if the file lacks them."""
    common.ensure_section(
        path,
        SECTION,
        NAME,
        "Issue 20's benchmarks: how long `handle = job.delay(...)` then `handle.get()` takes"
        " for a no-op job that keeps its result, beside the same round trip in raw"
        " confluent-kafka, and what `keep_result=True` costs in enqueue and worker"
        " throughput; see the docstring of `bench/results.py`.\n\n"
        "```\n"
        "python -m bench.results --broker embedded\n"
        "python -m bench.results --broker apache\n"
        "```\n\n",
    )


if __name__ == "__main__":
    sys.exit(main())
