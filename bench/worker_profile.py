"""Where a worker's microseconds go, per record, stage by stage, on one broker.

    python -m bench.worker_profile [--broker embedded|apache] [--jobs N] [--runs R]
        [--cprofile] [--top K]

A topic of `bench.throughput.PARTITIONS` partitions is pre-filled with N no-op jobs
(`bench.throughput.prefill`, the same records the throughput benchmark uses). Each
run measures, in microseconds per record:

worker, end to end
    `bench.throughput.worker_kafka_jobs`: an in-process `app.worker(concurrency=4)`,
    timed from the first job to the N-th (no profiler: the figure the ratio is about).
raw loop
    `bench.throughput.worker_raw`: `consume(1000)`, `json.loads`, a no-op call.
stages, replayed
    The worker's own code run stage by stage on one thread over a fresh pre-filled
    topic, each stage timed with `time.thread_time` (CPU time of the thread: other
    processes on the machine do not count) around whole batches (no profiler):
    fetch (`Client.poll_eager`, as the listener polls), job building (`by_partition`
    and `JobBuilder.build`), queue hand-off (`JobsQueue.track`, the scheduler's
    `put`, `get`, `complete`, `take_finished`), the executor (`Executor.run`; split
    into decode, the task call, and the rest: context, outcome, done offsets, event
    and tracing checks), offset tracking (`Job.mark_progress`), and a commit
    (`mark_for` per partition and `Client.commit`, asynchronous) after every batch,
    and the freeing of the batch's records (librdkafka releases each message when
    the last reference to it goes: in the worker, when the listener drops a
    finished job). The listener commits once per `commit_interval` (1 s), not per
    batch, so the commit line is an upper bound.

"not in the stages" is the end-to-end figure less the stages' sum: what the
threads add (hand-offs between the listener and 4 worker threads, GIL switches,
the listener waiting for a batch's last job before it polls again). `--cprofile`
also runs the real worker under one `cProfile` per thread and prints the functions
with the most own time, summed over threads (the profiler inflates small calls:
read its shares, not its microseconds).

The report is printed (Markdown); it goes into bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Message

from bench import common, throughput
from bench.common import Figure
from bench.throughput import (
    Meter,
    make_app,
    prefilled_topic,
    register,
    time_worker,
    worker_kafka_jobs,
    worker_raw,
)
from kafka_jobs.connection.client import Client, Key, Mark, by_partition
from kafka_jobs.instrumentation import tracing
from kafka_jobs.processing.executor import Executor
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import SerializedScheduler
from kafka_jobs.worker.building import JobBuilder
from kafka_jobs.worker.marks import mark_for

STAGES = (
    ("fetch", "listener fetch: `Client.poll_eager(batch_size, poll_timeout)`"),
    ("build", "job building: `by_partition` + `JobBuilder.build` (tracker.register)"),
    ("queue", "queue hand-off: track, schedule (put), get, complete, take_finished"),
    ("headers", "executor: `Message.headers()` first call (confluent-kafka builds the list)"),
    ("decode", "executor: decode (`Executor._decode`: header dict, JSON, task lookup)"),
    ("call", "executor: the task call itself (no-op job + meter)"),
    ("executor", "executor: the rest of `Executor.run` (context, conclude, done offsets)"),
    ("events", "of which: event and tracing checks with no subscriber"),
    ("offsets", "offset tracking: `Job.mark_progress` (tracker.mark_done)"),
    ("commit", "commit: `mark_for` per partition + async `Client.commit`, once per batch"),
    ("free", "records freed (librdkafka releases each message when a job is dropped)"),
)
SUMMED = (
    "fetch",
    "build",
    "queue",
    "headers",
    "decode",
    "call",
    "executor",
    "offsets",
    "commit",
    "free",
)


# --- end to end ------------------------------------------------------------------------------


class CpuMeter(Meter):
    """A `Meter` that also notes the process's CPU time at the first run and the last."""

    latest: CpuMeter | None = None  # the latest one built (the throughput steps build their own)

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.cpu_first = self.cpu_last = 0.0
        CpuMeter.latest = self

    def hit(self) -> None:
        count = next(self._next)  # atomic under the GIL
        self.seen = count
        if count == 1:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        if count == self.target:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()

    def cpu_us(self) -> float:
        """CPU microseconds of the whole process per run, from the first run to the last."""
        return (self.cpu_last - self.cpu_first) / (self.target - 1) * 1e6


def end_to_end(
    step: Callable[[str, int, float], Figure], bootstrap: str, n: int, timeout: float
) -> tuple[Figure, float | None]:
    """A `bench.throughput` worker step, with its process CPU time per record."""
    original = throughput.Meter
    throughput.Meter = CpuMeter  # type: ignore[misc]
    try:
        figure = step(bootstrap, n, timeout)
    finally:
        throughput.Meter = original  # type: ignore[misc]
    meter = CpuMeter.latest
    cpu = meter.cpu_us() if meter is not None and figure.rate is not None else None
    return figure, cpu


# --- the replay -----------------------------------------------------------------------------


class Clock:
    """Seconds per stage, summed over a replay."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {name: 0.0 for name, _ in STAGES}
        self.polls = 0
        self.jobs = 0

    def timed(self, stage: str, started: float) -> float:
        now = time.thread_time()
        self.spent[stage] += now - started
        return now


@dataclass
class Parts:
    """The worker's parts the replay drives, built by an (unstarted) worker."""

    client: Client
    builder: JobBuilder
    queue: JobsQueue
    scheduler: SerializedScheduler
    executor: Executor
    fn: Callable[..., object]
    group: str
    states: dict[Key, PartitionState] = field(default_factory=dict)


def replay(bootstrap: str, n: int, timeout: float) -> dict[str, float]:
    """Run the worker's stages one after the other on this thread; us per record per stage."""
    topic = prefilled_topic(bootstrap, "bench-prof", n)
    app = make_app(bootstrap, common.unique("bench-g-prof"))
    meter = Meter(2 * n)
    task = register(app, topic, meter.hit)
    worker = app.worker(concurrency=1)  # built for its parts, never started
    settings = worker.settings
    group = worker.listeners[0].group.name
    client = Client(settings.consumer_settings(common.unique("bench-g-prof")))
    parts = Parts(
        client,
        # The listener's builder asks its (unstarted) client for the group metadata.
        JobBuilder(group, worker.consumption, 1, client.group_metadata),
        worker.queue,
        worker.scheduler,
        worker.executor,
        task.fn,
        group,
    )
    clock = Clock()
    fetched = 0
    try:
        client.subscribe([topic])
        deadline = time.monotonic() + timeout
        first: list[Message] = []
        while not first and time.monotonic() < deadline:  # the group join, untimed
            first = client.poll_eager(settings.batch_size, settings.poll_timeout)
        fetched = len(first)
        clock.polls += 1
        # The batch's records are freed when `one_batch` returns: librdkafka releases
        # each message then (the worker pays that when it drops a finished job).
        clock.timed("free", one_batch(parts, first, clock, time.thread_time()))
        del first
        while fetched < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {fetched} of {n} records within {timeout}s")
            started = time.thread_time()
            records = client.poll_eager(settings.batch_size, settings.poll_timeout)
            fetched += len(records)
            clock.polls += 1
            now = clock.timed("fetch", started)
            now = one_batch(parts, records, clock, now)
            del records
            clock.timed("free", now)
        if meter.seen != 2 * n:  # each record's call ran twice: once beside, once inside
            raise RuntimeError(f"{meter.seen} calls for {n} records in the replay")
    finally:
        client.close()
    spent = clock.spent
    spent["call"] -= spent["decode"]
    spent["executor"] -= spent["decode"] + spent["call"]
    per_record = {stage: seconds / n * 1e6 for stage, seconds in spent.items()}
    per_record["records/poll"] = n / clock.polls
    per_record["records/job"] = n / clock.jobs
    return per_record


def one_batch(parts: Parts, records: list[Message], clock: Clock, now: float) -> float:
    """The listener's and the workers' steps for one fetched batch; the time at the end."""
    batches, _ = by_partition(records)
    jobs: list[Job] = []
    for key, batch in batches.items():
        state = parts.states.get(key)
        if state is None:
            state = parts.states[key] = PartitionState(*key)
        jobs.extend(parts.builder.build(key, state, batch))
    now = clock.timed("build", now)
    clock.jobs += len(jobs)
    queue, executor = parts.queue, parts.executor
    queue.track(jobs)
    parts.scheduler.schedule_consumption(jobs)
    now = clock.timed("queue", now)
    events = executor.processing.events
    for _ in jobs:
        job = queue.get(0)
        assert job is not None
        now = clock.timed("queue", now)
        # confluent-kafka builds a record's header list on the first headers() call
        # (the executor's decode, in the worker), then keeps it.
        for record in job.records:
            record.headers()
        now = clock.timed("headers", now)
        executor.run(job)
        now = clock.timed("executor", now)
        # The executor's parts, run again beside it on the same records and taken
        # out of its total by `replay`. Nothing is kept: envelopes held in a list
        # would cost the collector time the executor (dropping each at once) never pays.
        for record in job.records:
            executor._decode(record)
        now = clock.timed("decode", now)
        for record in job.records:
            envelope = executor._decode(record)[0]
            parts.fn(*envelope.args, **envelope.kwargs)
        now = clock.timed("call", now)
        for _ in job.records:  # what `run_record` and `_conclude` check per record
            if events.active or tracing.enabled() or events.active:
                pass
        now = clock.timed("events", now)
        queue.complete(job)
        now = clock.timed("queue", now)
    finished = queue.take_finished(parts.group)
    now = clock.timed("queue", now)
    for job in finished:
        job.mark_progress()
    now = clock.timed("offsets", now)
    marks: list[Mark] = []
    for state in parts.states.values():
        found = mark_for(state, parts.builder.options(state.topic), None)
        if found is not None:
            marks.append(found[0])
    parts.client.commit(marks, asynchronous=True)
    return clock.timed("commit", now)


# --- cProfile of the real worker -------------------------------------------------------------


def profile_worker(bootstrap: str, n: int, timeout: float) -> tuple[Figure, pstats.Stats]:
    """The real worker with one profiler per thread (started inside it); their stats merged."""
    topic = prefilled_topic(bootstrap, "bench-prof-cp", n)
    app = make_app(bootstrap, common.unique("bench-g-prof-cp"))
    meter = Meter(n)
    register(app, topic, meter.hit)
    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_profiler(*_: object) -> None:
        # Runs as the thread's first profile event: swap in a real profiler for it.
        profiler = cProfile.Profile()
        with lock:
            profilers.append(profiler)
        profiler.enable()  # replaces this thread's hook; threads started later get theirs

    threading.setprofile(start_profiler)
    try:
        figure = time_worker(app, meter, timeout)
    finally:
        threading.setprofile(None)
    for profiler in profilers:
        profiler.disable()  # only stops the profiler of a thread that is still alive
    stats = pstats.Stats(profilers[0]) if profilers else pstats.Stats()
    for profiler in profilers[1:]:
        stats.add(profiler)
    return figure, stats


def waits(path: str, name: str) -> bool:
    """Whether a profiled function blocks (locks, conditions, sleeps, librdkafka polls)."""
    if name == "wait" or "acquire" in name or "sleep" in name:
        return True
    return path == "~" and ("'poll'" in name or "'consume'" in name)


def top_functions(stats: pstats.Stats, jobs: int, top: int) -> list[list[str]]:
    """Rows of the functions with the most own time: name, calls per record, us per record."""
    table = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], stats.stats)  # type: ignore[attr-defined]
    rows = []
    # Blocking calls (lock and condition waits, librdkafka polls) are left out: they
    # hold no CPU, and in a threads' sum they count once per waiting thread.
    working = {k: v for k, v in table.items() if not waits(k[0], k[2])}
    total = sum(tt for (_, _, tt, _, _) in working.values())
    for (path, line, name), (_, calls, tt, _, _) in sorted(
        working.items(), key=lambda item: -item[1][2]
    )[:top]:
        where = f"{path.rsplit('/', 1)[-1]}:{line}" if path != "~" else "built-in"
        rows.append(
            [
                f"`{name}` {where}",
                f"{calls / jobs:.3f}",
                f"{tt / jobs * 1e6:.2f}",
                f"{tt / total:.0%}",
            ]
        )
    return rows


# --- the run --------------------------------------------------------------------------------


@dataclass
class Runs:
    """Every run's figures, in microseconds per record."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {"worker": [], "raw": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"worker": [], "raw": []})
    stages: list[dict[str, float]] = field(default_factory=list)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser(
        "bench.worker_profile", __doc__, 50_000, "jobs per run", appends=False
    )
    common.add_options(
        parser,
        ("--timeout", 120.0, "seconds allowed per step"),
        ("--cprofile", False, "also profile the real worker with cProfile (one per thread)"),
        ("--top", 25, "functions listed by --cprofile"),
    )
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.runs < 1:
        parser.error("--jobs must be at least 2, --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.worker_profile")
    runs = Runs()
    failed = False
    with common.broker(args.broker) as handle:
        bootstrap = handle.bootstrap
        common.progress(f"broker: {handle.description} at {bootstrap}")
        for r in range(args.runs):
            tag = f"[run {r + 1}/{args.runs}]"
            for side, step in (("worker", worker_kafka_jobs), ("raw", worker_raw)):
                figure, cpu = end_to_end(step, bootstrap, args.jobs, args.timeout)
                common.progress(
                    f"{tag} {side}: {common.describe(figure)}, CPU {fmt(cpu)} us/record"
                )
                if figure.rate is None or cpu is None:
                    failed = True
                    continue
                runs.wall[side].append(1e6 / figure.rate)
                runs.cpu[side].append(cpu)
            try:
                runs.stages.append(replay(bootstrap, args.jobs, args.timeout))
            except Exception as exc:
                failed = True
                common.progress(f"{tag} replay FAILED: {exc!r}")
                continue
            common.progress(
                f"{tag} stages (CPU us/record): "
                + ", ".join(f"{k} {v:.2f}" for k, v in runs.stages[-1].items())
            )
        profile: tuple[Figure, pstats.Stats] | None = None
        if args.cprofile:
            profile = profile_worker(bootstrap, args.jobs, args.timeout)
    print()
    print(report(handle.name, invocation, args, runs, profile))
    return 1 if failed else 0


def report(
    broker: str,
    invocation: common.Invocation,
    args: argparse.Namespace,
    runs: Runs,
    profile: tuple[Figure, pstats.Stats] | None,
) -> str:
    """The Markdown report: medians of the runs, per-run figures in brackets."""

    def cell(values: list[float]) -> str:
        if not values:
            return "n/a"
        each = ", ".join(f"{v:.2f}" for v in values)
        return f"{statistics.median(values):.2f} ({each})"

    stages = runs.stages
    rows = [[text, cell([s[name] for s in stages])] for name, text in STAGES]
    rows += [
        [f"(replay: {name}, not us)", cell([s[name] for s in stages])]
        for name in ("records/poll", "records/job")
    ]
    sums = [sum(s[k] for k in SUMMED) for s in stages]
    rows.append(["**sum of the stages** (the events line is inside the executor's)", cell(sums)])
    worker_cpu, total = median(runs.cpu["worker"]), median(sums)
    if worker_cpu is not None and total is not None:
        rows.append(
            [
                "not in the stages: librdkafka's threads, thread hand-offs, GIL switches"
                " (worker CPU - sum)",
                fmt(worker_cpu - total),
            ]
        )
    rows += [
        ["**worker, CPU of the process** (concurrency 4)", cell(runs.cpu["worker"])],
        ["**raw loop, CPU of the process**", cell(runs.cpu["raw"])],
        ["**worker, wall clock** (concurrency 4)", cell(runs.wall["worker"])],
        ["**raw loop, wall clock**: consume(1000) + json.loads + call", cell(runs.wall["raw"])],
    ]
    for what, figures in (("CPU", runs.cpu), ("wall clock", runs.wall)):
        worker, raw = median(figures["worker"]), median(figures["raw"])
        ratio = "n/a" if worker is None or raw is None else f"{raw / worker:.0%}"
        rows.append([f"raw / worker, {what} (the throughput ratio)", ratio])
    lines = [
        f"On {broker}, {args.jobs} jobs x {args.runs} runs, {invocation.date},"
        f" {common.source_state()}, load {invocation.load_average()}:",
        "",
        "```",
        invocation.command,
        "```",
        "",
        common.markdown_table(["stage", "us per record: median (per run)"], rows),
    ]
    if profile is not None:
        figure, stats = profile
        lines += [
            "",
            f"cProfile of the real worker ({common.describe(figure)}); own time summed over"
            " threads, blocking calls left out:",
            "",
            common.markdown_table(
                ["function", "calls/record", "us/record", "share"],
                top_functions(stats, args.jobs, args.top),
            ),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
