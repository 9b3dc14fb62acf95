"""Consumer group protocols, classic against KIP-848 ("consumer"): join time and duplicates.

    python -m bench.group_protocols [--broker apache|embedded] [--runs 5] [--rate 200]
        [--job-ms 5] [--phase 3] [--out bench/RESULTS.md]

Needs Apache Kafka (4.0+) for the "consumer" protocol, so `--broker` defaults to apache
(one KRaft node started here and stopped at the end; `KAFKA_BOOTSTRAP_SERVERS` takes
precedence). The broker is probed first with
`kafka_jobs.testing.broker_supports_consumer_protocol`; when it lacks KIP-848 (the embedded
Tansu broker, an old Kafka) the report says so and only "classic" is measured.

Each run, for each protocol in turn (``KAFKA_JOBS_GROUP_PROTOCOL=classic|consumer`` in the
workers' environment; classic: cooperative-sticky, session.timeout.ms 6000,
heartbeat.interval.ms 1000; consumer: the broker's group.consumer.* settings, heartbeat
1 s), on a fresh topic of 6 partitions with a fresh group:

1. one seed job waits in the topic; worker A starts: ``python -m kafka_jobs worker -A
   bench.group_app`` (`bench/group_app.py`, default concurrency 4). Join time: from A's
   process start (`Popen`) to its first assignment and to its first job (the seed); also
   from A's module import ("ready") to its first assignment, which leaves out the
   interpreter start. Then a producer thread of this process sends
   ``bench.group.work(seq, sent)`` at `--rate` jobs/s (seq 0, 1, 2, ...; each job sleeps
   `--job-ms`) until step 4;
2. `--phase` s after A's first job, worker B starts: its join into a live
   group (start to first assignment, start to "settled": A and B own the 6 partitions
   between them);
3. `--phase` s after that, A gets SIGTERM (a clean leave): the hand-over (SIGTERM to B
   owning all 6 partitions) and A's exit;
4. 2 s later the producer stops; once every job sent has run (bounded), B gets SIGTERM.

Before the first run, one untimed worker per protocol runs one job (the broker creates
its consumer-offsets topic, kafka-jobs its delay-tier topics, on first use).

Every job start goes to a ledger file (`bench/group_app.py`) with the worker's pid; a job
whose seq appears more than once ran twice: counted as a duplicate at the join (its
second run started before A's SIGTERM) or at the leave. Also reported: jobs that never
ran, and the worst enqueue-to-start latency while B joined and while A left (the
rebalance pause as the jobs saw it), against the p50 of the steady phase before B.
Medians of `--runs` runs; every wait is bounded (`--timeout`), every process started
here is stopped by its PID. The report replaces this broker's block of `--out` and
rebuilds the side-by-side table (`bench.common.record_side_by_side`; `--out -`: none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import common
from bench.group_app import TASK_NAME
from bench.throughput import make_app
from kafka_jobs.testing import broker_supports_consumer_protocol

PARTITIONS = 6
PROTOCOLS = ("classic", "consumer")
TITLES = {"classic": "classic (cooperative-sticky)", "consumer": "consumer (KIP-848)"}
STOP_TIMEOUT = 40.0  # a worker's clean shutdown, then SIGKILL
TAIL = 2.0  # seconds the producer keeps sending after the leave


# --- the ledger -----------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the workers of one run wrote (`bench/group_app.py`)."""

    ready: dict[int, float] = field(default_factory=dict)
    events: list[tuple[float, int, str, set[int]]] = field(default_factory=list)
    runs: list[tuple[float, int, int, float]] = field(default_factory=list)  # t, pid, seq, sent

    @classmethod
    def read(cls, path: Path) -> Ledger:
        ledger = cls()
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return ledger
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ready":
                ledger.ready[int(parts[1])] = float(parts[2])
            elif len(parts) == 4 and parts[0] in ("assigned", "revoked", "lost"):
                partitions = set() if parts[3] == "-" else {int(p) for p in parts[3].split(",")}
                ledger.events.append((float(parts[2]), int(parts[1]), parts[0], partitions))
            elif len(parts) == 5 and parts[0] == "run":
                ledger.runs.append((float(parts[2]), int(parts[1]), int(parts[3]), float(parts[4])))
        ledger.events.sort()
        return ledger

    def owned(self) -> tuple[dict[int, set[int]], float]:
        """The partitions each pid owns after the events so far, and the last event's time."""
        owned: dict[int, set[int]] = {}
        last = 0.0
        for t, pid, kind, partitions in self.events:
            mine = owned.setdefault(pid, set())
            if kind == "assigned":
                mine |= partitions
            else:
                mine -= partitions
            last = t
        return owned, last

    def first(self, pid: int, kind: str = "assigned") -> float | None:
        return next((t for t, p, k, parts in self.events if p == pid and k == kind and parts), None)

    def first_run(self, pid: int) -> float | None:
        return min((t for t, p, _, _ in self.runs if p == pid), default=None)


# --- the producer ---------------------------------------------------------------------------


class Pacer(threading.Thread):
    """Sends `bench.group.work(seq, sent)` at `rate` jobs/s until stopped (bounded)."""

    def __init__(self, bootstrap: str, topic: str, rate: float, max_seconds: float) -> None:
        super().__init__(name="bench-pacer", daemon=True)
        self.app = make_app(bootstrap)

        def work(seq: int, sent: float) -> None:  # runs in the workers (bench.group_app)
            pass

        self.task = self.app.job(topic=topic, name=TASK_NAME)(work)
        self.app.producer.client.list_topics(topic, timeout=10)
        self.rate, self.max_seconds = rate, max_seconds
        self.sent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            begin = time.monotonic()
            while not self.stopping.is_set() and time.monotonic() - begin < self.max_seconds:
                due = begin + self.sent / self.rate
                now = time.monotonic()
                if due > now:
                    self.stopping.wait(due - now)
                    continue
                self.task.delay(self.sent, time.time())
                self.sent += 1
        except BaseException as exc:  # reported by the run
            self.error = exc

    def stop(self) -> int:
        """Stop sending, flush; the number of jobs sent."""
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(30)
        self.app.flush(30)
        return self.sent


# --- one run of one protocol ----------------------------------------------------------------


@dataclass
class Run:
    """The figures of one run of one protocol (seconds unless said otherwise)."""

    lone_join: float | None = None  # A: process start to first assignment
    lone_join_ready: float | None = None  # A: module imported to first assignment
    lone_first_job: float | None = None  # A: process start to first job
    second_join: float | None = None  # B: process start to first assignment
    second_settled: float | None = None  # B: process start to the 6 partitions split A/B
    handover: float | None = None  # SIGTERM to A until B owns the 6 partitions
    leave_exit: float | None = None  # SIGTERM to A until A exited
    sent: int = 0
    duplicates_join: int = 0
    duplicates_leave: int = 0
    missing: int = 0
    lost_events: int = 0
    steady_p50_ms: float | None = None
    worst_join_ms: float | None = None
    worst_leave_ms: float | None = None
    exit_codes: list[int | None] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        parts = [
            f"A joins {fmt_s(self.lone_join)} after start ({fmt_s(self.lone_join_ready)} after"
            f" import), first job {fmt_s(self.lone_first_job)}",
            f"B first assignment {fmt_s(self.second_join)}, settled {fmt_s(self.second_settled)}",
            f"A's leave: B owns all after {fmt_s(self.handover)}, A exited after"
            f" {fmt_s(self.leave_exit)}",
            f"{self.sent} jobs sent, ran twice {self.duplicates_join} at the join +"
            f" {self.duplicates_leave} at the leave, missing {self.missing}",
            f"latency p50 steady {fmt_ms(self.steady_p50_ms)}, worst at the join"
            f" {fmt_ms(self.worst_join_ms)}, at the leave {fmt_ms(self.worst_leave_ms)}",
            f"exit codes {self.exit_codes}",
        ]
        if self.lost_events:
            parts.append(f"{self.lost_events} partitions-lost events")
        text = "; ".join(parts)
        return f"FAILED: {self.error} ({text})" if self.error else text


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def wait_for(
    path: Path, done: Callable[[Ledger], object], timeout: float, process: subprocess.Popen[bytes]
) -> Ledger:
    """Re-read the ledger every 50 ms until `done(ledger)` (bounded); raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        ledger = Ledger.read(path)
        if done(ledger):
            return ledger
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout:.0f} s")
        if process.poll() is not None:
            raise RuntimeError(f"worker {process.pid} exited with code {process.returncode}")
        time.sleep(0.05)


def worker_setup(
    protocol: str, bootstrap: str, args: argparse.Namespace, workdir: Path
) -> tuple[str, Path, list[str], dict[str, str]]:
    """A fresh topic and group: the topic, the ledger, the worker command and environment."""
    topic = common.create_topic(bootstrap, "bench-grp", PARTITIONS)
    group = common.unique("bench-grp-g")
    ledger_path = workdir / f"{topic}.ledger"
    env = common.worker_env(bootstrap)
    env.update(
        KAFKA_JOBS_GROUP_PROTOCOL=protocol,
        BENCH_GROUP_TOPIC=topic,
        BENCH_GROUP_LEDGER=str(ledger_path),
        BENCH_GROUP_JOB_SECONDS=str(args.job_ms / 1000),
        PYTHONPATH=os.pathsep.join(p for p in (str(common.ROOT), env.get("PYTHONPATH")) if p),
    )
    command = [sys.executable, "-m", "kafka_jobs", "--log-level", "warning", "worker"]
    command += ["-A", "bench.group_app", "-g", group]
    return topic, ledger_path, command, env


def warm_up(protocol: str, bootstrap: str, args: argparse.Namespace, workdir: Path) -> None:
    """One worker runs one job, untimed: the broker's internal topics (consumer offsets,
    the kafka-jobs delay tiers) and the client code paths exist before the first run."""
    topic, ledger_path, command, env = worker_setup(protocol, bootstrap, args, workdir)
    app = make_app(bootstrap)
    app.job(topic=topic, name=TASK_NAME)(lambda seq, sent: None).delay(-1, time.time())
    app.flush(10)
    worker = common.spawn(command, env, workdir / f"{topic}.warm-up.log", cwd=common.ROOT)
    try:
        wait_for(ledger_path, lambda led: led.runs, args.timeout, worker)
    except (TimeoutError, RuntimeError) as exc:
        common.progress(f"    warm-up: {exc}")
    finally:
        common.stop_process(worker, STOP_TIMEOUT)


def scenario(
    protocol: str, bootstrap: str, args: argparse.Namespace, workdir: Path, tag: str
) -> Run:
    topic, ledger_path, command, env = worker_setup(protocol, bootstrap, args, workdir)
    run = Run()
    everything = set(range(PARTITIONS))
    pacer = Pacer(bootstrap, topic, args.rate, max_seconds=args.timeout * 4 + args.phase * 2 + 30)
    workers: list[subprocess.Popen[bytes]] = []
    stopped = False
    try:
        pacer.task.delay(-1, time.time())  # the seed: A's first job, waiting when A starts
        pacer.app.flush(10)
        start_a = time.time()
        a = common.spawn(command, env, workdir / f"{topic}.A.log", cwd=common.ROOT)
        workers.append(a)
        ledger = wait_for(
            ledger_path, lambda led: led.owned()[0].get(a.pid) == everything, args.timeout, a
        )
        first_a = ledger.first(a.pid)
        assert first_a is not None
        run.lone_join = first_a - start_a
        if a.pid in ledger.ready:
            run.lone_join_ready = first_a - ledger.ready[a.pid]
        ledger = wait_for(ledger_path, lambda led: led.first_run(a.pid), args.timeout, a)
        run.lone_first_job = (ledger.first_run(a.pid) or 0) - start_a
        pacer.start()  # the steady stream, from A's first job on
        common.progress(f"{tag} {protocol}: A joined after {fmt_s(run.lone_join)}")
        time.sleep(args.phase)

        start_b = time.time()
        b = common.spawn(command, env, workdir / f"{topic}.B.log", cwd=common.ROOT)
        workers.append(b)

        def split(led: Ledger) -> bool:
            owned, _ = led.owned()
            mine, theirs = owned.get(b.pid, set()), owned.get(a.pid, set())
            return bool(mine) and bool(theirs) and mine | theirs == everything

        ledger = wait_for(ledger_path, split, args.timeout, b)
        first_b = ledger.first(b.pid)
        assert first_b is not None
        run.second_join = first_b - start_b
        settled_at = ledger.owned()[1]
        run.second_settled = settled_at - start_b
        common.progress(f"{tag} {protocol}: B joined, settled after {fmt_s(run.second_settled)}")
        time.sleep(args.phase)

        term = time.time()
        a.terminate()  # SIGTERM to the process started here, by its PID
        handed_over = leave(run, a, b, ledger_path, term, args.timeout)
        common.progress(f"{tag} {protocol}: A left, B owns all after {fmt_s(run.handover)}")
        time.sleep(TAIL)
        run.sent = pacer.stop()
        stopped = True
        if pacer.error is not None:
            raise RuntimeError(f"producer failed: {pacer.error!r}")
        try:
            ledger = wait_for(
                ledger_path,
                lambda led: len({r[2] for r in led.runs if r[2] >= 0}) >= run.sent,
                args.timeout,
                b,
            )
        except TimeoutError:
            ledger = Ledger.read(ledger_path)
        tally(run, ledger, term, start_a, start_b, settled_at, handed_over)
    except Exception as exc:
        run.error = repr(exc)
    finally:
        if not stopped:
            run.sent = pacer.stop()
        run.exit_codes = [common.stop_process(w, STOP_TIMEOUT) for w in workers]
    if run.error is not None:
        tally(run, Ledger.read(ledger_path), None, None, None, None, None)
    return run


def leave(
    run: Run,
    a: subprocess.Popen[bytes],
    b: subprocess.Popen[bytes],
    ledger_path: Path,
    term: float,
    timeout: float,
) -> float:
    """After A's SIGTERM: note when A exited and when B owned every partition (returned)."""
    everything = set(range(PARTITIONS))
    deadline = time.monotonic() + timeout
    handed_over: float | None = None
    while time.monotonic() < deadline:
        if run.leave_exit is None and a.poll() is not None:
            run.leave_exit = time.time() - term
        if handed_over is None:
            owned, last = Ledger.read(ledger_path).owned()
            if owned.get(b.pid) == everything:
                handed_over = last
                run.handover = handed_over - term
        if handed_over is not None and run.leave_exit is not None:
            return handed_over
        if b.poll() is not None:
            raise RuntimeError(f"worker {b.pid} exited with code {b.returncode}")
        time.sleep(0.02)
    if handed_over is None:
        raise TimeoutError(f"B did not own every partition {timeout:.0f} s after A's SIGTERM")
    return handed_over  # A did not exit in time: stop_process kills it


def tally(
    run: Run,
    ledger: Ledger,
    term: float | None,
    start_a: float | None,
    start_b: float | None,
    settled_at: float | None,
    handed_over: float | None,
) -> None:
    """Duplicates, missing jobs, lost events and latencies of the run from its ledger."""
    counts = Counter(seq for _, _, seq, _ in ledger.runs)
    run.missing = sum(1 for seq in range(run.sent) if seq not in counts)
    run.lost_events = sum(1 for e in ledger.events if e[2] == "lost")
    seen: set[int] = set()
    for t, _, seq, _ in sorted(ledger.runs):
        if seq in seen:
            if term is None or t < term:
                run.duplicates_join += 1
            else:
                run.duplicates_leave += 1
        seen.add(seq)
    if None in (term, start_a, start_b, settled_at, handed_over):
        return
    assert term and start_b and settled_at and handed_over

    def latencies(low: float, high: float) -> list[float]:
        return [(t - sent) * 1000 for t, _, _, sent in ledger.runs if low <= t < high]

    steady = latencies(start_b - 2.0, start_b)
    run.steady_p50_ms = statistics.median(steady) if steady else None
    join = latencies(start_b, settled_at + 1.0)
    run.worst_join_ms = max(join) if join else None
    leave = latencies(term, handed_over + 1.0)
    run.worst_leave_ms = max(leave) if leave else None


# --- report ---------------------------------------------------------------------------------


ROWS: list[tuple[str, str, str]] = [
    # (title, Run attribute, format: s | ms | n)
    ("lone worker: process start to first assignment", "lone_join", "s"),
    ("lone worker: module imported to first assignment", "lone_join_ready", "s"),
    ("lone worker: process start to first job", "lone_first_job", "s"),
    ("second worker joining a live group: start to first assignment", "second_join", "s"),
    ("second worker: start to settled (6 partitions split between the two)", "second_settled", "s"),
    ("SIGTERM to the first worker: until the second owns all 6 partitions", "handover", "s"),
    ("SIGTERM to the first worker: until it exited", "leave_exit", "s"),
    ("jobs that ran twice at the join", "duplicates_join", "n"),
    ("jobs that ran twice at the leave", "duplicates_leave", "n"),
    ("jobs that never ran", "missing", "n"),
    ("enqueue-to-start latency p50, steady phase before the join", "steady_p50_ms", "ms"),
    ("worst enqueue-to-start latency while the second worker joined", "worst_join_ms", "ms"),
    ("worst enqueue-to-start latency while the first worker left", "worst_leave_ms", "ms"),
]


def median_of(runs: list[Run], attribute: str) -> float | None:
    values = [getattr(r, attribute) for r in runs if r.error is None]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cell(runs: list[Run], attribute: str, kind: str) -> str:
    value = median_of(runs, attribute)
    if kind == "s":
        return fmt_s(value)
    if kind == "ms":
        return fmt_ms(value)
    ok = [r for r in runs if r.error is None]
    total = sum(getattr(r, attribute) for r in ok)
    return "n/a" if value is None else f"{value:g} (total {total} in {len(ok)} runs)"


def table_rows(results: dict[str, list[Run]], protocols: list[str]) -> list[list[str]]:
    return [
        [title, *(cell(results[p], attribute, kind) for p in protocols)]
        for title, attribute, kind in ROWS
    ]


def section(
    handle: common.BrokerHandle,
    invocation: common.Invocation,
    load_average: str,
    args: argparse.Namespace,
    results: dict[str, list[Run]],
    protocols: list[str],
    supported: bool,
) -> str:
    header = ["median of runs", *(TITLES[p] for p in protocols)]
    out = [
        f"### On {handle.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- broker: {handle.description}",
        f"- KIP-848 (group.protocol=consumer): {'supported' if supported else 'NOT supported'}"
        " (kafka_jobs.testing.broker_supports_consumer_protocol)",
        f"- {args.runs} runs, protocols interleaved; topic of {PARTITIONS} partitions;"
        f" producer {args.rate:,.0f} jobs/s; each job sleeps {args.job_ms:g} ms; workers at"
        f" default concurrency (4); {args.phase:g} s between the phases",
        "",
        f"#### Medians of {args.runs} runs ({handle.name})",
        "",
        common.markdown_table(header, table_rows(results, protocols)),
        "",
        "Details:",
        "",
    ]
    for protocol in protocols:
        out += [
            f"- {protocol} run {i + 1}: {r.describe()}" for i, r in enumerate(results[protocol])
        ]
    out += common.notes_list(notes(handle.kind, supported))
    return "\n".join(out)


def notes(kind: str, supported: bool) -> list[str]:
    out = [
        "join times run from `Popen` (interpreter start, imports, worker start-up included)"
        " or from the moment `bench/group_app.py` was imported, to the worker's first"
        " `partitions.assigned` event on the job topic.",
        "a duplicate is a job whose start was logged twice: a job that was running (or"
        " fetched and started) on a worker when its partition was revoked, whose offset was"
        " not committed yet, runs again on the new owner. kafka-jobs commits what finished"
        " on a revoked partition synchronously in the revoke callback, and a stopping worker"
        " waits for its running jobs (shutdown_timeout) before it commits and leaves.",
        "latencies: job start minus the `time.time()` stamped just before `.delay()`; 'worst"
        " while joined/left' is the largest over the jobs that started between the second"
        " worker's start (or the SIGTERM) and one second after the group settled.",
    ]
    if not supported:
        out.append(
            "this broker does not support KIP-848 (no assignment for a group.protocol=consumer"
            " member within 10 s), so only the classic protocol was measured."
        )
    if kind == "apache":
        out.append(
            "the Apache Kafka node runs with group.initial.rebalance.delay.ms 0 and"
            " group.consumer.heartbeat.interval.ms 1000, group.consumer.session.timeout.ms"
            " 10000 (kafka_jobs.apache.node_config)."
        )
    return out


def summary_cells(
    date: str,
    load_average: str,
    args: argparse.Namespace,
    results: dict[str, list[Run]],
    protocols: list[str],
) -> list[list[str]]:
    """Headline medians, one row per figure: "classic / KIP-848" in one cell."""
    names = " / ".join("KIP-848" if p == "consumer" else p for p in PROTOCOLS)
    picks = [
        ("lone worker: start to first assignment", "lone_join", "s"),
        ("lone worker: start to first job", "lone_first_job", "s"),
        ("second worker joining: start to first assignment", "second_join", "s"),
        ("first worker's SIGTERM: until the second owns all partitions", "handover", "s"),
        ("jobs run twice at the join, all runs", "duplicates_join", "total"),
        ("jobs run twice at the leave, all runs", "duplicates_leave", "total"),
        ("jobs never run, all runs", "missing", "total"),
        ("worst latency while the second worker joined", "worst_join_ms", "ms"),
        ("worst latency while the first worker left", "worst_leave_ms", "ms"),
    ]
    cells = []
    for title, attribute, kind in picks:
        values = []
        for protocol in PROTOCOLS:
            runs = results.get(protocol)
            if not runs:
                values.append("not supported")
            elif kind == "total":
                values.append(str(sum(getattr(r, attribute) for r in runs if r.error is None)))
            else:
                values.append(cell(runs, attribute, kind))
        cells.append([f"{title} ({names})", " / ".join(values)])
    cells += [
        ["date", date],
        ["load average (1 min) at start / end", load_average],
        ["runs; rate; job time", f"{args.runs}; {args.rate:,.0f}/s; {args.job_ms:g} ms"],
    ]
    return cells


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.arg_parser("bench.group_protocols", __doc__, broker_default="apache")
    parser.add_argument("--runs", type=int, default=5, help="runs of each protocol")
    common.add_out_argument(parser, appends=False)
    common.add_options(
        parser,
        ("--rate", 200.0, "jobs per second the producer sends"),
        ("--job-ms", 5.0, "milliseconds each job sleeps"),
        ("--phase", 3.0, "seconds between the phases (join, second join, leave)"),
        ("--timeout", 60.0, "seconds allowed for each wait"),
        ("--logs", "", "directory for the worker logs and ledgers (default: a temporary one)"),
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or args.job_ms < 0 or args.phase < 0:
        parser.error("--runs at least 1, --rate positive, --job-ms and --phase not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.group_protocols")
    results: dict[str, list[Run]] = {}
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        common.progress(f"broker: {handle.description} at {handle.bootstrap}")
        supported = broker_supports_consumer_protocol(handle.bootstrap)
        protocols = list(PROTOCOLS) if supported else ["classic"]
        if not supported:
            common.progress(
                "this broker does not support KIP-848 (group.protocol=consumer):"
                " measuring the classic protocol only"
            )
        results = {p: [] for p in protocols}
        for protocol in protocols:
            common.progress(f"warm-up (untimed): one worker with the {protocol} protocol ...")
            warm_up(protocol, handle.bootstrap, args, workdir)
        for r in range(args.runs):
            tag = f"[run {r + 1}/{args.runs}]"
            for protocol in protocols:
                run = scenario(protocol, handle.bootstrap, args, workdir, tag)
                results[protocol].append(run)
                common.progress(f"{tag} {protocol}: {run.describe()}")
    load_average = invocation.load_average()
    print()
    print(f"broker: {handle.description}")
    header = ["median of runs", *(TITLES[p] for p in protocols)]
    print(common.text_table(header, table_rows(results, protocols)))
    common.record_side_by_side(
        args.out,
        "group_protocols",
        handle.kind,
        handle.name,
        section(handle, invocation, load_average, args, results, protocols, supported),
        summary_cells(invocation.date, load_average, args, results, protocols),
    )
    failed = any(r.error for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
