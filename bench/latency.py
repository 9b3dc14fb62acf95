"""Enqueue-to-start latency at a steady rate: kafka-jobs against raw confluent-kafka and Celery.

    python -m bench.latency [--broker embedded|apache] [--rate 1000] [--jobs 3000]
        [--warmup 1000] [--runs 5] [--no-celery] [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` and stops
it at the end: embedded (default; Tansu) or apache (one Apache Kafka KRaft node).

What is measured: for every job, the time from the moment the producer is about to
enqueue it (`time.time()` stamped into the job's arguments or the record's value) to
the moment it starts on the consumer side (`time.time()` at the start of the job body,
or when the raw consumer call returned the record), on one machine (one clock). The
producer runs in this process and sends at a steady `--rate` (one job every 1/rate s,
paced against `time.monotonic()`); the consumer is a subprocess (`bench/latency_app.py`,
see its docstring) on a fresh topic of 6 partitions with a fresh consumer group.

Each run, for each side in turn:

1. create the topic, start the consumer subprocess, and send one probe job every 0.5 s
   until one has run (bounded by `--ready-timeout`): the group is joined;
2. send `--warmup` jobs, then `--jobs` measured jobs, without a pause, at `--rate`;
3. flush the producer, wait (bounded by `--drain-timeout`) until every measured job has
   run, stop the subprocess (SIGTERM, by PID);
4. p50, p99 and max over the measured jobs (nearest rank), and the rate actually sent.

The medians over `--runs` runs of each side's p50 and p99 are reported, with ratios; the
report replaces this broker's block of `--out` and rebuilds the table of every broker side
by side (`bench.common.record_side_by_side`; `--out -` writes nothing).

Sides (null record keys everywhere, so the producer spreads records over the partitions
the same way):

kafka-jobs
    `task.delay(seq, sent)` on an `App` with the default producer settings (linger.ms 5);
    the worker is ``python -m kafka_jobs worker -A bench.latency_app`` at its defaults
    (4 threads; the listener fetches with `Client.poll_eager(1000, 0.1)`: `poll(0.1)`,
    which returns at the first record, then `consume(999, 0)` for what is fetched already).
raw poll()
    a plain `Producer` with the kafka-jobs producer settings (same linger.ms 5, same
    idempotence), `produce()` + `poll(0)` per record with the value JSON
    ``{"seq", "sent"}``; a plain `Consumer` (the kafka-jobs consumer settings, in a group)
    calling `poll(0.1)`: the latency the client itself gives (the listener's
    `poll_eager` waits the same way for its first record).
raw consume(1000, 0.1)
    the same producer; the consumer fetches as the kafka-jobs listener did before
    `poll_eager` (issue 21), `consume(1000, 0.1)`: that call returns when it has 1000
    records or after 0.1 s, so at 1000 records/s it hands over a batch about every 0.1 s.
celery kafkajobs://
    Celery over this project's kombu transport (`celery_bridge`), `task.delay(seq, sent)`
    from this process, ``celery worker --pool threads -c 4`` consuming; transport options
    at their defaults but the group timeouts and a fresh group id (as in
    `bench/celery_brokers.py`). `--no-celery` skips it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.pools
from confluent_kafka import Producer

from bench import celery_app, common
from bench.celery_brokers import flush_kafkajobs, kafka_url
from bench.latency_app import TASK_NAME, make_celery
from bench.throughput import make_app

PARTITIONS = 6
CONCURRENCY = 4  # the kafka-jobs default; the celery worker gets the same
KJ, RAW_POLL, RAW_BATCH, CELERY = "kafka-jobs", "raw poll()", "raw consume(1000, 0.1)", "celery"
SIDES = (KJ, RAW_POLL, RAW_BATCH, CELERY)
TITLES = {
    KJ: "kafka-jobs (worker, 4 threads)",
    RAW_POLL: "raw confluent-kafka, poll(0.1) per record",
    RAW_BATCH: "raw confluent-kafka, consume(1000, 0.1) (the listener's call before poll_eager)",
    CELERY: "celery kafkajobs:// (--pool threads -c 4)",
}
PROBE_EVERY = 0.5  # seconds between probe jobs while waiting for the consumer
STOP_TIMEOUT = 20.0


# --- figures ------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of one side: latencies (ms) of the measured jobs and how the run went."""

    latencies: list[float] = field(default_factory=list)
    expected: int = 0
    duplicates: int = 0
    sent_rate: float = 0.0
    max_send_lag: float = 0.0  # seconds the pacer fell behind its schedule, at worst
    startup: float | None = None  # seconds from the subprocess start to the first probe run
    error: str | None = None

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (ms), None without figures."""
        if self.error is not None or not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def missing(self) -> int:
        return self.expected - len(self.latencies)

    def describe(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        text = (
            f"{len(self.latencies)} of {self.expected} jobs: p50 {fmt_ms(self.percentile(0.5))},"
            f" p90 {fmt_ms(self.percentile(0.9))}, p99 {fmt_ms(self.percentile(0.99))},"
            f" max {fmt_ms(self.percentile(1.0))};"
            f" sent at {self.sent_rate:,.0f}/s (pacer at most {self.max_send_lag * 1000:.1f} ms"
            " behind)"
        )
        if self.startup is not None:
            text += f"; first probe ran {self.startup:.1f} s after the consumer started"
        if self.duplicates:
            text += f"; {self.duplicates} ran twice"
        return text


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_x(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:.2f}x" if a / b < 10 else f"{a / b:.1f}x"


class Figures:
    """Every run of every side."""

    def __init__(self) -> None:
        self.runs: dict[str, list[Run]] = {side: [] for side in SIDES}

    def median(self, side: str, q: float) -> float | None:
        values = [v for run in self.runs[side] if (v := run.percentile(q)) is not None]
        return statistics.median(values) if values else None


# --- producers ------------------------------------------------------------------------------


class Sender:
    """How one side enqueues `(seq, sent)`; `flush` waits for every delivery."""

    def __init__(
        self,
        send: Callable[[int, float], object],
        flush: Callable[[float], None],
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.send, self.flush, self.close = send, flush, close


def kafka_jobs_sender(bootstrap: str, topic: str) -> Sender:
    app = make_app(bootstrap)

    def stamp(seq: int, sent: float) -> None:  # runs in the worker (bench.latency_app)
        pass

    task = app.job(topic=topic, name=TASK_NAME)(stamp)
    app.producer.client.list_topics(topic, timeout=10)  # connected before the first job
    return Sender(lambda seq, sent: task.delay(seq, sent), lambda t: app.flush(t))


def raw_sender(bootstrap: str, topic: str) -> Sender:
    producer = Producer(make_app(bootstrap).settings.producer_settings())
    producer.list_topics(topic, timeout=10)

    def send(seq: int, sent: float) -> None:
        producer.produce(topic, json.dumps({"seq": seq, "sent": sent}).encode())
        producer.poll(0)

    def flush(timeout: float) -> None:
        left = producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} records undelivered after the flush")

    return Sender(send, flush)


def celery_options(group: str | None) -> dict[str, Any]:
    """kafkajobs:// transport options: defaults, but the group timeouts (and group id)."""
    options: dict[str, Any] = {
        "consumer_config": dict(celery_app.GROUP_CONFIG),
        "topic_partitions": PARTITIONS,
    }
    if group is not None:
        options["group_id"] = group
    return options


def celery_sender(bootstrap: str, topic: str) -> Sender:
    options = {**celery_options(None), "kafka_config": {"logger": common.LIBRDKAFKA_LOG}}
    app, task = make_celery(kafka_url("kafkajobs", bootstrap), topic, options)

    def close() -> None:
        kombu.pools.reset()  # type: ignore[no-untyped-call]
        app.close()

    return Sender(lambda seq, sent: task.delay(seq, sent), lambda t: flush_kafkajobs(app, t), close)


SENDERS: dict[str, Callable[[str, str], Sender]] = {
    KJ: kafka_jobs_sender,
    RAW_POLL: raw_sender,
    RAW_BATCH: raw_sender,
    CELERY: celery_sender,
}


# --- consumers ------------------------------------------------------------------------------


def consumer_command(side: str, topic: str, group: str, seconds: float) -> list[str]:
    if side == KJ:
        return [sys.executable, "-m", "kafka_jobs", "--log-level", "warning", "worker"]
    if side in (RAW_POLL, RAW_BATCH):
        mode = "poll" if side == RAW_POLL else "batch"
        return [sys.executable, "-m", "bench.latency_app", "raw", topic, group, mode, f"{seconds}"]
    return [
        sys.executable,
        *("-m", "celery", "-A", "bench.latency_app:celery_app", "worker"),
        *("--pool", "threads", "-c", str(CONCURRENCY), "-Q", topic),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
    ]


def consumer_env(
    side: str, bootstrap: str, topic: str, group: str, marks: Path
) -> tuple[dict[str, str], list[str]]:
    """The subprocess environment, and the arguments a kafka-jobs worker adds."""
    env = common.worker_env(bootstrap)
    env.update(
        BENCH_LATENCY_TOPIC=topic,
        BENCH_LATENCY_MARKS=str(marks),
        PYTHONPATH=os.pathsep.join(p for p in (str(common.ROOT), env.get("PYTHONPATH")) if p),
    )
    if side == CELERY:
        env["BENCH_CELERY_BROKER"] = kafka_url("kafkajobs", bootstrap)
        env["BENCH_CELERY_TRANSPORT_OPTIONS"] = json.dumps(celery_options(group))
    extra = ["-A", "bench.latency_app", "-g", group] if side == KJ else []
    return env, extra


def read_marks(path: Path) -> list[tuple[int, float, float]]:
    """`(seq, sent, started)` of every line written so far (a partial last line skipped)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    marks = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            marks.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return marks


# --- one run of one side --------------------------------------------------------------------


def measure(side: str, bootstrap: str, args: argparse.Namespace, workdir: Path, tag: str) -> Run:
    topic = common.create_topic(bootstrap, "bench-lat", PARTITIONS)
    group = common.unique("bench-lat-g")
    marks = workdir / f"{topic}.marks"
    total = args.warmup + args.jobs
    stream_seconds = total / args.rate
    bound = args.ready_timeout + stream_seconds * 3 + args.drain_timeout + 30
    env, extra = consumer_env(side, bootstrap, topic, group, marks)
    command = consumer_command(side, topic, group, bound) + extra
    sender = SENDERS[side](bootstrap, topic)
    run = Run(expected=args.jobs)
    started = time.time()
    process = common.spawn(command, env, workdir / f"{topic}.log", cwd=common.ROOT)
    try:
        # 1. wait until the consumer runs a probe (negative seq)
        deadline = time.monotonic() + args.ready_timeout
        probe = 0
        next_probe = time.monotonic()
        while True:
            seen = [m for m in read_marks(marks) if m[0] < 0]
            if seen:
                run.startup = min(m[2] for m in seen) - started
                break
            if process.poll() is not None:
                run.error = f"consumer exited with code {process.returncode}: " + log_tail(
                    workdir / f"{topic}.log"
                )
                return run
            if time.monotonic() > deadline:
                run.error = f"no probe ran within {args.ready_timeout:.0f} s"
                return run
            if time.monotonic() >= next_probe:
                probe -= 1
                sender.send(probe, time.time())
                sender.flush(5)
                next_probe = time.monotonic() + PROBE_EVERY
            time.sleep(0.02)
        # 2. the paced stream: warm-up, then the measured jobs
        common.progress(
            f"{tag} {side}: consumer ready after {run.startup:.1f} s; sending {args.warmup}"
            f" + {args.jobs} jobs at {args.rate:,.0f}/s ..."
        )
        interval = 1.0 / args.rate
        stream_deadline = time.monotonic() + stream_seconds * 3 + 10
        first_sent = last_sent = 0.0
        begin = time.monotonic() + 0.01
        for seq in range(total):
            due = begin + seq * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                run.max_send_lag = max(run.max_send_lag, now - due)
                if seq % 256 == 0 and now > stream_deadline:
                    run.error = f"only {seq} of {total} sent in {stream_seconds * 3 + 10:.0f} s"
                    return run
            sent = time.time()
            sender.send(seq, sent)
            if seq == args.warmup:
                first_sent = sent
            last_sent = sent
        sender.flush(30)
        if args.jobs > 1:
            run.sent_rate = (args.jobs - 1) / max(last_sent - first_sent, 1e-9)
        # 3. wait until every measured job ran
        deadline = time.monotonic() + args.drain_timeout
        while True:
            measured = [m for m in read_marks(marks) if m[0] >= args.warmup]
            if len({m[0] for m in measured}) >= args.jobs or time.monotonic() > deadline:
                break
            if process.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        common.stop_process(process, STOP_TIMEOUT)
        sender.close()
    measured = [m for m in read_marks(marks) if m[0] >= args.warmup]
    latest: dict[int, float] = {}
    for seq, sent, began in measured:
        if seq not in latest:  # the first run of a job counts
            latest[seq] = (began - sent) * 1000
    run.latencies = list(latest.values())
    run.duplicates = len(measured) - len(latest)
    if run.missing:
        run.error = f"{run.missing} of {args.jobs} measured jobs did not run within the drain"
    return run


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:] if line.strip()) or "(empty log)"


# --- report -------------------------------------------------------------------------------


HEADER = [
    "side",
    "p50",
    "p99",
    "max (median of runs)",
    "p50 / raw poll()",
    "p99 / raw poll()",
]


def table_rows(figures: Figures, sides: list[str]) -> list[list[str]]:
    raw50, raw99 = figures.median(RAW_POLL, 0.5), figures.median(RAW_POLL, 0.99)
    rows = []
    for side in sides:
        p50, p99 = figures.median(side, 0.5), figures.median(side, 0.99)
        rows.append(
            [
                TITLES[side],
                fmt_ms(p50),
                fmt_ms(p99),
                fmt_ms(figures.median(side, 1.0)),
                fmt_x(p50, raw50),
                fmt_x(p99, raw99),
            ]
        )
    return rows


def ratio_lines(figures: Figures) -> list[str]:
    kj50, kj99 = figures.median(KJ, 0.5), figures.median(KJ, 0.99)
    lines = []
    for other, name in (
        (RAW_POLL, "raw poll()"),
        (RAW_BATCH, "raw consume(1000, 0.1)"),
        (CELERY, "celery kafkajobs://"),
    ):
        if not figures.runs[other]:
            continue
        lines.append(
            f"kafka-jobs / {name}: p50 {fmt_x(kj50, figures.median(other, 0.5))},"
            f" p99 {fmt_x(kj99, figures.median(other, 0.99))}"
        )
    return lines


def summary_cells(
    date: str, load_average: str, args: argparse.Namespace, figures: Figures, sides: list[str]
) -> list[list[str]]:
    cells = []
    for side in sides:
        cells.append(
            [
                f"{side}: p50 / p99",
                f"{fmt_ms(figures.median(side, 0.5))} / {fmt_ms(figures.median(side, 0.99))}",
            ]
        )
    kj50, kj99 = figures.median(KJ, 0.5), figures.median(KJ, 0.99)
    for other in sides[1:]:
        cells.append(
            [
                f"**kafka-jobs / {other}**: p50, p99",
                f"{fmt_x(kj50, figures.median(other, 0.5))},"
                f" {fmt_x(kj99, figures.median(other, 0.99))}",
            ]
        )
    cells += [
        ["date", date],
        ["load average (1 min) at start / end", load_average],
        [
            "rate x measured jobs x runs",
            f"{args.rate:,.0f}/s x {args.jobs:,} (+{args.warmup:,} warm-up) x {args.runs}",
        ],
    ]
    return cells


def section(
    handle: common.BrokerHandle,
    invocation: common.Invocation,
    load_average: str,
    args: argparse.Namespace,
    figures: Figures,
    sides: list[str],
) -> str:
    out = [
        f"### On {handle.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- broker: {handle.description}",
        f"- rate {args.rate:,.0f} jobs/s; {args.warmup} warm-up + {args.jobs} measured jobs per"
        f" run and side; {args.runs} runs, sides interleaved; topics of {PARTITIONS}"
        " partitions, a fresh topic and group per run and side",
        "",
        f"#### Medians of {args.runs} runs ({handle.name})",
        "",
        common.markdown_table(HEADER, table_rows(figures, sides)),
        "",
        *(f"- {line}" for line in ratio_lines(figures)),
        "",
        "#### Per run (p50 / p99)",
        "",
    ]
    rows = []
    for side in sides:
        cells = [
            "FAILED" if r.error else f"{fmt_ms(r.percentile(0.5))} / {fmt_ms(r.percentile(0.99))}"
            for r in figures.runs[side]
        ]
        rows.append([side, *cells, *[""] * (args.runs - len(cells))])
    out += [
        common.markdown_table(["side", *(f"run {r + 1}" for r in range(args.runs))], rows),
        "",
        "Details:",
        "",
    ]
    for side in sides:
        out += [
            f"- {side} run {r + 1}: {run.describe()}" for r, run in enumerate(figures.runs[side])
        ]
    out += common.notes_list(notes(handle.kind))
    return "\n".join(out)


def notes(kind: str) -> list[str]:
    out = [
        "latency = `time.time()` when the job body starts (raw: when the consumer call"
        " returned the record) minus `time.time()` stamped into the job just before"
        " `.delay()` / `produce()`; it includes the producer's linger (linger.ms 5 on every"
        " side), the broker round trip, the fetch and, for the workers, the hand-over to a"
        " worker thread.",
        "raw consume(1000, 0.1) is the call the kafka-jobs listener made before issue 21"
        " (`consume(batch_size, poll_timeout)`): librdkafka returns from it when it has 1000"
        " records or when 0.1 s has passed, so at 1000 records/s a record waits about"
        " 50 ms on average (up to 100 ms) inside that call; raw poll(0.1) returns each record"
        " as soon as it is fetched, and so does the listener's `Client.poll_eager` (poll()"
        " for the first record, then consume(n, 0) for those already fetched).",
        "the pacer sleeps until each job's due time (one every 1/rate s); when it falls"
        " behind it sends at once, so the rate holds on average; the details give the rate"
        " actually sent and how far behind the pacer fell.",
        "the producer runs in the benchmark process, the consumer in its own subprocess; the"
        " machine's 2 CPUs are shared by them and the broker.",
    ]
    if kind == "embedded":
        out.append(
            "Tansu completes a group join after about half of session.timeout.ms (6 s): the"
            " probe wait absorbs it."
        )
    return out


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser("bench.latency", __doc__, 3000, "measured jobs per run and side")
    parser.set_defaults(runs=5)
    common.add_options(
        parser,
        ("--rate", 1000.0, "jobs per second the producer sends"),
        ("--warmup", 1000, "jobs sent at the rate before the measured ones, per run and side"),
        ("--no-celery", False, "skip Celery"),
        ("--ready-timeout", 60.0, "seconds to wait for a consumer's first probe job"),
        ("--drain-timeout", 30.0, "seconds to wait for the last measured jobs after sending"),
        ("--logs", "", "directory for the consumer logs and marks (default: a temporary one)"),
    )
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.runs < 1 or args.rate <= 0 or args.warmup < 0:
        parser.error("--jobs at least 2, --runs at least 1, --rate positive, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.latency")
    sides = [s for s in SIDES if not (args.no_celery and s == CELERY)]
    figures = Figures()
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        common.progress(f"broker: {handle.description} at {handle.bootstrap}")
        for r in range(args.runs):
            tag = f"[run {r + 1}/{args.runs}]"
            for side in sides:
                try:
                    run = measure(side, handle.bootstrap, args, workdir, tag)
                except Exception as exc:
                    run = Run(expected=args.jobs, error=repr(exc))
                figures.runs[side].append(run)
                common.progress(f"{tag} {side}: {run.describe()}")
    load_average = invocation.load_average()
    print()
    print(f"broker: {handle.description}")
    print(common.text_table(HEADER, table_rows(figures, sides)))
    for line in ratio_lines(figures):
        print(line)
    common.record_side_by_side(
        args.out,
        "latency",
        handle.kind,
        handle.name,
        section(handle, invocation, load_average, args, figures, sides),
        summary_cells(invocation.date, load_average, args, figures, sides),
    )
    failed = any(run.error for side in (KJ, RAW_POLL) for run in figures.runs[side])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
