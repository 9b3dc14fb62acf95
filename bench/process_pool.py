"""Process pool for CPU-bound jobs (issue #9): kafka-jobs threads vs processes, raw, Celery.

    python -m bench.process_pool [--broker embedded|apache] [--jobs N] [--runs R]
        [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` (default
embedded Tansu; apache: one Apache Kafka KRaft node) and stops it at the end
(`bench.common.broker`). Before measuring, waits (bounded, `--idle-wait`)
until no process matches `storm-diag` and the 1-minute load average is below
`--max-load`, so that the two cores are free.

Every side runs the same job, `bench.pool_app.cpu_job(i, key)`: pure-Python integer
arithmetic (`bench.pool_app.ROUNDS` iterations, about 15 ms of one core; the time of one
job alone is measured at the start). Each run of each side uses a fresh topic of
PARTITIONS partitions pre-filled with `--jobs` jobs (keys `k{i % 64}`, record i on
partition i % 4, so the partitions hold the same number of jobs) and a fresh group,
and starts its worker in a subprocess. Every job appends its start and end times
(CLOCK_MONOTONIC, one clock for all processes) and its pid to a marks file; a run is
timed from the first job's start to the N-th job's end (process start-up and group join
excluded), rate = N / that time, and the medians of `--runs` runs are reported.
Measurements, interleaved within each run:

(a) kafka-jobs, threads pool: `python -m kafka_jobs worker -A bench.pool_app --pool
    threads -c 2` (the default pool).
(b) kafka-jobs, process pool: the same with `--pool processes -c 2` (two spawned
    children, one per worker thread).
(b') the same as (b) on a topic configured `long_running=True` (`app.configure_topic`):
    the listener pauses a partition while its batch runs and keeps fetching the others,
    instead of fetching only when the whole batch of every partition is done.
(c1) raw confluent-kafka, ONE process: `python -m bench.pool_app raw ...`, a plain
    `consume(1000, 0.1)` loop over all partitions (`assign()`, no group join) that
    `json.loads` each value and calls the job, and commits asynchronously once a second:
    the 1-core limit.
(c2) raw confluent-kafka, TWO such processes, each assigned two of the four partitions:
    the 2-core limit.
(d) Celery, `celery -A bench.pool_app:celery_app worker --pool prefork -c 2` through
    kombu's `confluentkafka://` transport (the broker the other benches use for Celery),
    transport options polling_interval 0.01 s and wait_time_seconds 0.5 s, the jobs sent
    with `apply_async` to a fresh topic of PARTITIONS partitions before the worker starts.

The results are printed and appended as a section to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench import common, pool_app
from bench.common import Figure, Results, fmt_rate
from bench.throughput import (
    CELERY_TUNED_OPTIONS,
    KEYS,
    celery_broker_url,
    check_raw_record,
    log_tail,
    make_app,
    raw_record,
)

PARTITIONS = 4
CONCURRENCY = 2
PROGRESS_EVERY = 2.0  # seconds between progress lines while a side runs
STALL_SECONDS = 20.0  # a side that ran jobs and then none for this long is stopped
CALIBRATION_CALLS = 15
SNAPSHOT = ("kafka_jobs", "celery_bridge", "bench")  # what the measured processes import
SECTION = "## Process pool for CPU-bound jobs (bench/process_pool.py)"
WORKER = "worker"

THREADS, PROCESSES, LONG, RAW1, RAW2, CELERY = "a", "b", "b'", "c1", "c2", "d"
LABELS = {
    THREADS: f"(a) kafka-jobs, threads pool, -c {CONCURRENCY}",
    PROCESSES: f"(b) kafka-jobs, process pool, -c {CONCURRENCY}",
    LONG: f"(b') kafka-jobs, process pool, -c {CONCURRENCY}, topic long_running=True",
    RAW1: "(c1) raw confluent-kafka, 1 process (1-core limit)",
    RAW2: "(c2) raw confluent-kafka, 2 processes (2-core limit)",
    CELERY: f"(d) celery, prefork pool -c {CONCURRENCY}, kombu confluentkafka:// (tuned)",
}
SIDES = tuple(LABELS)


def fmt_x(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


# --- the marks the jobs write ------------------------------------------------------------


@dataclass
class Marks:
    """What the processes of one run appended to their marks file, read as it grows."""

    path: Path
    ends: dict[int, float] = field(default_factory=dict)  # job -> its first end
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per job line
    per_pid: Counter[int] = field(default_factory=Counter)
    ready: dict[int, tuple[int, float]] = field(default_factory=dict)  # pid -> (ppid, time)
    lines: int = 0
    _offset: int = 0
    _rest: bytes = b""

    def update(self) -> int:
        """Read the new complete lines; the number of distinct jobs that ended."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        *complete, self._rest = (self._rest + data).split(b"\n")
        for line in complete:
            kind, *fields = line.decode().split()
            if kind == "job":
                i, start, end, pid = int(fields[0]), float(fields[1]), float(fields[2]), fields[3]
                self.lines += 1
                self.spans.append((start, end))
                self.per_pid[int(pid)] += 1
                self.ends[i] = min(end, self.ends.get(i, end))
            elif kind == "ready":
                self.ready[int(fields[0])] = (int(fields[1]), float(fields[2]))
        return len(self.ends)

    def window(self, target: int) -> tuple[float, float]:
        """The timed span: the first job's start, the `target`-th distinct job's end."""
        return min(s for s, _ in self.spans), sorted(self.ends.values())[target - 1]

    def figure(self, target: int, spawned: float) -> Figure:
        first, last = self.window(target)
        return Figure(jobs=target, seconds=last - first, startup=first - spawned)

    def busy(self, target: int) -> float:
        """Mean number of jobs running at once over the timed span."""
        first, last = self.window(target)
        inside = sum(max(0.0, min(e, last) - max(s, first)) for s, e in self.spans)
        return inside / (last - first) if last > first else 0.0

    def info(self, spawned: float, workers: list[int], target: int) -> str:
        """Start-up of the processes, jobs per process, job time: for the details."""
        parts = []
        own = [self.ready[p][1] - spawned for p in workers if p in self.ready]
        if own:
            parts.append(f"app imported {max(own):.2f} s after spawn")
        children = [t - spawned for pid, (ppid, t) in self.ready.items() if ppid in workers]
        if children:
            parts.append(
                f"{len(children)} children imported it {min(children):.2f}-{max(children):.2f} s"
                " after spawn"
            )
        if self.spans:
            parts.append(f"first job {min(s for s, _ in self.spans) - spawned:.2f} s after spawn")
        shares = "/".join(str(n) for _, n in self.per_pid.most_common())
        parts.append(f"jobs per process {shares}")
        if self.spans:
            wall = statistics.median(e - s for s, e in self.spans)
            parts.append(f"median job wall time {wall * 1000:.1f} ms")
        if len(self.ends) >= target:
            parts.append(f"jobs running at once {self.busy(target):.2f} on average")
        if self.lines > len(self.ends):
            parts.append(f"{self.lines - len(self.ends)} jobs ran twice")
        return "; ".join(parts)


def run_processes(
    commands: list[list[str]],
    env: dict[str, str],
    cwd: Path,
    marks: Marks,
    target: int,
    timeout: float,
    workdir: Path,
    tag: str,
    infos: dict[str, list[str]],
    side: str,
) -> Figure:
    """Start the processes, wait until `target` distinct jobs ended, stop them; the figure.

    Bounded: `timeout` seconds, or STALL_SECONDS without a new job after the first one.
    """
    log_path = workdir / f"{marks.path.stem}.log"
    load = os.getloadavg()[0]
    spawned = time.monotonic()
    processes = [common.spawn(c, env, log_path, cwd=cwd) for c in commands]
    pids = [p.pid for p in processes]
    ended, done = "timed out", 0
    try:
        deadline = spawned + timeout
        printed = progressed = time.monotonic()
        while time.monotonic() < deadline:
            crashed = [p for p in processes if p.poll() is not None]
            if crashed:
                ended = f"process {crashed[0].pid} exited with code {crashed[0].returncode}"
                break
            count = marks.update()
            now = time.monotonic()
            if count != done:
                done, progressed = count, now
            if done >= target:
                ended = "done"
                break
            if done and now - progressed > STALL_SECONDS:
                ended = "stalled"
                break
            if now - printed >= PROGRESS_EVERY:
                printed = now
                common.progress(f"    {tag}: {done} of {target} jobs done")
            time.sleep(0.2)
    finally:
        for process in processes:
            if common.stop_process(process, 30) is None:
                common.progress(f"    warning: process {process.pid} had to be killed")
        reap_children(marks, pids)
    infos[side].append(f"load {load:.2f} at start; {marks.info(spawned, pids, target)}")
    if ended != "done":
        return Figure(
            error=f"{ended}: {done} of {target} jobs done after"
            f" {time.monotonic() - spawned:.0f} s; log tail: {log_tail(log_path)}"
        )
    return marks.figure(target, spawned)


def reap_children(marks: Marks, parents: list[int]) -> None:
    """Kill (by PID) a child of ours that outlived its stopped parent, and say so."""
    marks.update()
    for pid, (ppid, _) in marks.ready.items():
        if ppid not in parents or not Path(f"/proc/{pid}").exists():
            continue
        time.sleep(2.0)  # children exit when their parent closes their pipe
        if Path(f"/proc/{pid}").exists():
            common.progress(f"    warning: child {pid} of {ppid} still alive: killed")
            os.kill(pid, 9)


# --- the sides -------------------------------------------------------------------------------


def prefill(bootstrap: str, n: int) -> str:
    """A fresh topic holding `n` kafka-jobs records of `bench.cpu`, record i on partition i % 4.

    The records are those `cpu.delay(i, f"k{i % 64}")` makes (`bench.throughput.raw_record`,
    checked against `kafka_jobs.wire` at start); each key stays on one partition.
    """
    topic = common.create_topic(bootstrap, "bench-pool", PARTITIONS)
    producer = Producer(make_app(bootstrap).settings.producer_settings())
    task = pool_app.TASK_NAME.encode()
    for i in range(n):
        value, key, headers = raw_record(i, task)
        producer.produce(topic, value, key, headers=headers, partition=i % PARTITIONS)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"pre-fill: {left} of {n} records undelivered")
    return topic


@dataclass
class Run:
    """What every side of one run needs."""

    bootstrap: str
    args: argparse.Namespace
    workdir: Path
    source: Path  # the snapshot the processes import
    tag: str
    infos: dict[str, list[str]]

    def env(self, marks: Marks, **extra: str) -> dict[str, str]:
        env = common.worker_env(self.bootstrap)
        env.update(
            BENCH_POOL_MARKS=str(marks.path),
            BENCH_POOL_ROUNDS=str(self.args.rounds),
            PYTHONPATH=os.pathsep.join(p for p in (str(self.source), env.get("PYTHONPATH")) if p),
            **extra,
        )
        return env

    def marks(self, side: str) -> Marks:
        path = self.workdir / f"{common.unique(f'marks-{side}')}.txt"
        return Marks(path)

    def run(self, side: str, commands: list[list[str]], env: dict[str, str], m: Marks) -> Figure:
        return run_processes(
            commands,
            env,
            self.source,
            m,
            self.args.jobs,
            self.args.timeout,
            self.workdir,
            f"{self.tag} ({side})",
            self.infos,
            side,
        )

    def kafka_jobs(self, side: str, pool: str, topic_options: str = "") -> Figure:
        topic = prefill(self.bootstrap, self.args.jobs)
        m = self.marks(side)
        command = [
            sys.executable,
            "-m",
            "kafka_jobs",
            "--log-level",
            "warning",
            "worker",
            "-A",
            "bench.pool_app",
            "--pool",
            pool,
            "-c",
            str(CONCURRENCY),
            "--group",
            common.unique("bench-g-pool"),
        ]
        env = self.env(m, BENCH_POOL_TOPIC=topic, BENCH_POOL_TOPIC_OPTIONS=topic_options)
        return self.run(side, [command], env, m)

    def raw(self, side: str, count: int) -> Figure:
        topic = prefill(self.bootstrap, self.args.jobs)
        m = self.marks(side)
        group = common.unique("bench-g-pool-raw")
        commands = [
            [
                sys.executable,
                "-m",
                "bench.pool_app",
                "raw",
                topic,
                group,
                *map(str, (index, count, PARTITIONS)),
            ]
            for index in range(count)
        ]
        return self.run(side, commands, self.env(m), m)

    def celery(self, side: str) -> Figure:
        broker_url = celery_broker_url(self.bootstrap)
        queue = common.create_topic(self.bootstrap, "bench-pool-celery", PARTITIONS)
        celery_fill(broker_url, queue, self.args.jobs)
        m = self.marks(side)
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.pool_app:celery_app",
            "worker",
            "--pool",
            "prefork",
            "-c",
            str(CONCURRENCY),
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]
        env = self.env(
            m,
            BENCH_CELERY_BROKER=broker_url,
            BENCH_CELERY_QUEUE=queue,
            BENCH_CELERY_TRANSPORT_OPTIONS=json.dumps(CELERY_TUNED_OPTIONS),
        )
        return self.run(side, [command], env, m)


def celery_fill(broker_url: str, queue: str, n: int) -> None:
    """`n` `apply_async` calls of `bench.cpu(i, f"k{i % 64}")` to `queue` (not timed)."""
    options: dict[str, Any] = {"kafka_common_config": {"logger": common.LIBRDKAFKA_LOG}}
    celery = pool_app.make_celery(broker_url, queue, options)
    task = celery.tasks[pool_app.TASK_NAME]
    try:
        for i in range(n):
            task.apply_async((i, f"k{i % KEYS}"), queue=queue)
    finally:
        celery.close()  # drops the transport's producers before the broker goes away


def snapshot(workdir: Path) -> Path:
    """A copy of SNAPSHOT taken now, which every measured process imports (cwd and PYTHONPATH).

    The package is edited while the benchmark runs: a worker started later must not
    import a half-made change. The copy comes first on sys.path (the editable install's
    finder comes after it); checked by importing it once.
    """
    source = workdir / "src"
    for name in SNAPSHOT:
        shutil.copytree(
            common.ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    code = (
        "import kafka_jobs.cli, kafka_jobs.worker.runner, celery_bridge, bench.pool_app;"
        " print(kafka_jobs.__file__)"
    )
    check = subprocess.run(
        [sys.executable, "-c", code],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode != 0 or not check.stdout.strip().startswith(str(source)):
        raise SystemExit(f"the code snapshot does not import: {check.stdout}{check.stderr}")
    return source


# --- the machine ----------------------------------------------------------------------------


def wait_until_idle(max_wait: float, max_load: float, every: float = 30.0) -> str:
    """Wait (at most `max_wait` s) until no `storm-diag` process runs and the load is low."""
    started = time.monotonic()
    while True:
        busy = subprocess.run(
            ["pgrep", "-f", "storm-diag"], capture_output=True, text=True
        ).stdout.split()
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if not busy and load < max_load:
            return f"machine idle after {waited:.0f} s of waiting (load {load:.2f})"
        if waited >= max_wait:
            return (
                f"gave up waiting after {waited:.0f} s: {len(busy)} storm-diag processes,"
                f" load {load:.2f}"
            )
        common.progress(
            f"waiting for an idle machine: {len(busy)} storm-diag processes, load {load:.2f}"
            f" ({waited:.0f} of {max_wait:.0f} s)"
        )
        time.sleep(min(every, max(1.0, max_wait - waited)))


def calibrate(rounds: int) -> float:
    """Seconds of one job's work alone, in this process: the fastest of a few calls."""
    times = []
    for _ in range(CALIBRATION_CALLS):
        started = time.perf_counter()
        pool_app.burn(rounds)
        times.append(time.perf_counter() - started)
    return min(times)


# --- report ---------------------------------------------------------------------------------

HEADER = [
    "measurement",
    "jobs/s (median)",
    "% of ideal",
    "(b) / this row",
    "(b') / this row",
]


def table_rows(results: Results, job_seconds: float) -> list[list[str]]:
    processes, long = results.median(WORKER, PROCESSES), results.median(WORKER, LONG)
    rows = []
    for side in SIDES:
        if not results.figures[WORKER][side]:
            continue
        rate = results.median(WORKER, side)
        cores = 1 if side in (THREADS, RAW1) else CONCURRENCY
        ideal = cores / job_seconds
        rows.append(
            [
                LABELS[side],
                fmt_rate(rate),
                "n/a" if rate is None else f"{rate / ideal:.0%} of {cores}-core {ideal:.0f}/s",
                "-" if side == PROCESSES else fmt_x(processes, rate),
                "-" if side == LONG else fmt_x(long, rate),
            ]
        )
    return rows


def summary(results: Results) -> list[str]:
    processes, long = results.median(WORKER, PROCESSES), results.median(WORKER, LONG)
    return [
        f"speed-up of the process pool over the threads pool, (b)/(a):"
        f" {fmt_x(processes, results.median(WORKER, THREADS))}",
        f"(b) against the raw limits: {fmt_x(processes, results.median(WORKER, RAW1))} of 1"
        f" process (c1), {fmt_x(processes, results.median(WORKER, RAW2))} of 2 processes (c2)",
        f"(b) against celery prefork (d): {fmt_x(processes, results.median(WORKER, CELERY))}",
        f"without the batch barrier, (b')/(a): {fmt_x(long, results.median(WORKER, THREADS))};"
        f" (b')/(c2): {fmt_x(long, results.median(WORKER, RAW2))};"
        f" (b')/(d): {fmt_x(long, results.median(WORKER, CELERY))}",
    ]


def notes(job_seconds: float, idle: str) -> list[str]:
    return [
        f"one job's work alone takes {job_seconds * 1000:.1f} ms here (fastest of"
        f" {CALIBRATION_CALLS} calls in the benchmark process): the ideal is"
        f" {1 / job_seconds:.0f} jobs/s on one core and {2 / job_seconds:.0f} jobs/s on two.",
        "each run is timed from the first job's start to the N-th job's end, as read from the"
        " marks every job appends (CLOCK_MONOTONIC, shared by all processes); the process"
        " start-up, the import of the app by the pool's children and the consumer-group join"
        " are excluded (see 'after spawn' in the details).",
        "(b) and the batch barrier: on a regular (blocking) topic the listener fetches again"
        " only when every job of the last batch (one per partition, its records one after"
        " another) is done (kafka_jobs/worker/listener.py, `_fetch_loop`:"
        " `queue.wait_unblocked` before `consume()`). A diagnostic run of (b) with N = 1500 and"
        " the marks kept showed it: the first consume(1000) brought 375 + 375 + 250 records of"
        " three partitions; one child ran 375 then 250, the other 375 and then waited about 3 s"
        " for it; the second batch (125 + 375) left one child idle again at the end. So with"
        " about as many partitions as children the pool runs below two jobs at once ('jobs"
        " running at once' in the details); (b') is the same pool without that barrier.",
        "(a) runs both worker threads in one process, so the GIL lets one job compute at a time:"
        " the rate stays at the 1-core limit and each job's wall time grows by its waits for"
        " the GIL ('median job wall time' in the details).",
        "'% of ideal' divides by the solo job time measured at the start; on this VM that time"
        " varied between about 13 and 16 ms over the day, so (c1)/(c2) can show slightly over"
        " 100 %.",
        "(c1) is the 1-core limit and (c2) the 2-core limit: plain consume loops with no job"
        " framework, assigned their partitions (no group join, no rebalance); (c2) splits the"
        " four partitions, which hold the same number of jobs, two and two.",
        "(d) celery's prefork children are forked from the worker, which consumes and acks"
        " (acks_late off) in its main process; the kombu transport options are those of the"
        " other benches' tuned celery runs. The jobs carry the same arguments, but are sent"
        " by celery (no key); the topic has the same four partitions.",
        "the machine's 2 cores are shared by the broker, the benchmark process (idle while"
        " a side runs: it reads the marks file every 0.2 s) and the processes measured.",
        f"before measuring: {idle}.",
    ]


def section(
    invocation: common.Invocation,
    load_average: str,
    broker_description: str,
    args: argparse.Namespace,
    results: Results,
    infos: dict[str, list[str]],
    job_seconds: float,
    idle: str,
) -> str:
    out = [
        SECTION,
        "",
        "Issue #9: CPU-bound jobs (pure-Python arithmetic, ~15 ms each), two cores;"
        " see the docstring of `bench/process_pool.py` for each measurement.",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- broker: {broker_description}",
        "- code measured: the worker processes import a copy of"
        f" {', '.join(f'{d}/' for d in SNAPSHOT)} taken at the start (the package is edited"
        " while the benchmark runs)",
        f"- jobs per run: {args.jobs} ({args.rounds} rounds each, {job_seconds * 1000:.1f} ms"
        f" alone); {args.runs} runs, interleaved (a, b, b', c1, c2, d in each run); topics of"
        f" {PARTITIONS} partitions",
        "",
        f"### Medians of {args.runs} runs",
        "",
        common.markdown_table(HEADER, table_rows(results, job_seconds)),
        "",
        *(f"- {line}" for line in summary(results)),
        "",
        "### Per run (jobs/s)",
        "",
    ]
    per_run = results.per_run_rows(WORKER, SIDES, args.runs)
    for side, other, title in (
        (PROCESSES, THREADS, "speed-up (b)/(a)"),
        (LONG, THREADS, "speed-up (b')/(a)"),
        (PROCESSES, RAW2, "(b)/(c2)"),
        (PROCESSES, CELERY, "(b)/(d)"),
    ):
        pairs = zip(results.figures[WORKER][side], results.figures[WORKER][other], strict=False)
        per_run.append([WORKER, title, *(fmt_x(a.rate, b.rate) for a, b in pairs)])
    out += [
        common.markdown_table(
            ["side", *(f"run {r + 1}" for r in range(args.runs))],
            [[LABELS.get(row[1], row[1]), *row[2:]] for row in per_run],
        ),
        "",
    ]
    out += common.details(
        ((f"({side})", results.figures[WORKER][side]) for side in SIDES), "did not complete"
    )
    out += ["", "Processes, start-up and jobs per run:", ""]
    for side in SIDES:
        out += [f"- ({side}) run {r + 1}: {info}" for r, info in enumerate(infos[side])]
    out += common.notes_list(notes(job_seconds, idle))
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser("bench.process_pool", __doc__, 1500, "jobs per run of each side")
    common.add_options(
        parser,
        ("--rounds", pool_app.ROUNDS, "iterations of arithmetic per job (about 43 ns each)"),
        ("--timeout", 120.0, "seconds allowed per side and run (start-up included)"),
        ("--no-celery", False, "skip (d)"),
        ("--idle-wait", 2400.0, "seconds to wait at most for an idle machine first"),
        ("--max-load", 1.0, "1-minute load average below which the machine counts as idle"),
    )
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.runs < 1 or args.rounds < 1:
        parser.error("--jobs must be at least 2, --runs and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_raw_record()
    idle = wait_until_idle(args.idle_wait, args.max_load)
    common.progress(idle)
    invocation = common.begin("bench.process_pool")
    job_seconds = calibrate(args.rounds)
    common.progress(f"one job alone: {job_seconds * 1000:.1f} ms ({args.rounds} rounds)")
    results = Results((WORKER,), SIDES)
    infos: dict[str, list[str]] = {side: [] for side in SIDES}
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        source = snapshot(Path(tmp))
        common.progress(f"code measured: a copy of {', '.join(SNAPSHOT)} in {source}")
        common.progress(f"broker: {handle.description} at {handle.bootstrap}")
        for r in range(args.runs):
            tag = f"[run {r + 1}/{args.runs}]"
            run = Run(handle.bootstrap, args, Path(tmp), source, tag, infos)
            steps: list[tuple[str, Callable[[], Figure]]] = [
                (THREADS, partial(run.kafka_jobs, THREADS, "threads")),
                (PROCESSES, partial(run.kafka_jobs, PROCESSES, "processes")),
                (LONG, partial(run.kafka_jobs, LONG, "processes", '{"long_running": true}')),
                (RAW1, partial(run.raw, RAW1, 1)),
                (RAW2, partial(run.raw, RAW2, 2)),
            ]
            if not args.no_celery:
                steps.append((CELERY, partial(run.celery, CELERY)))
            for side, step in steps:
                results.measure(tag, WORKER, side, step)
                if infos[side] and len(infos[side]) == r + 1:
                    common.progress(f"    {infos[side][-1]}")
    load_average = invocation.load_average()
    print()
    print(common.text_table(HEADER, table_rows(results, job_seconds)))
    print()
    for line in summary(results):
        print(line)
    text = section(
        invocation, load_average, handle.description, args, results, infos, job_seconds, idle
    )
    common.append_section(args.out, text)
    failed = any(f.error is not None for side in SIDES for f in results.figures[WORKER][side])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
