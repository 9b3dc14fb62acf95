"""Throughput of kafka-jobs against raw confluent-kafka and Celery, on one broker.

    python -m bench.throughput [--broker embedded|apache] [--jobs N] [--runs R]
        [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` and stops
it at the end: embedded (default; Tansu, `kafka_jobs.broker.EmbeddedBroker`) or apache
(one Apache Kafka KRaft node, `kafka_jobs.apache.ApacheKafkaCluster`). Each measurement
runs `--runs` times on a fresh topic (and a fresh consumer group); the medians
are reported, against the raw and Celery loops measured on the same broker in the
same run. The report replaces this broker's block of the results file and the
side-by-side table of every broker's medians (`bench.common.record_side_by_side`).

Measurements:

enqueue
    kafka-jobs: `task.delay(i, f"k{i % 64}")` N times, then `app.flush()`.
    raw: a confluent-kafka `Producer` with the same librdkafka settings producing
    the same records (same key, same header list, same JSON value as
    `kafka_jobs.wire`), `produce()` + `poll(0)` per record, then `flush()`.
    celery: `task.apply_async(args, queue=...)` through kombu's own
    `confluentkafka://` transport (which flushes after every message), fewer jobs.
worker
    A topic of PARTITIONS partitions pre-filled with N jobs. kafka-jobs: an
    in-process `app.worker(concurrency=4)`; raw: one thread looping
    `consume(1000, 0.1)`, `json.loads` per value, a no-op call, an asynchronous
    commit every second. celery: `celery worker --pool threads -c 4` subprocesses
    (`bench/celery_app.py`), one with tuned kombu transport options on the topic
    the celery enqueue filled, one with kombu's defaults on a smaller pre-filled
    topic; both bounded in time and stopped after 10 s without progress. All are
    timed from the first job run to the N-th (group join and start-up excluded)
    and count runs inside the no-op job.

The enqueue figures are also given for the enqueue calls alone, before the final
flush ("enqueue-calls"), which separates client-side cost from broker acks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer

from bench import common
from bench.common import Figure, Results, describe, fmt_rate
from kafka_jobs.app import App
from kafka_jobs.settings import Settings
from kafka_jobs.task import Task
from kafka_jobs.wire import Headers, encode_headers, encode_value

if TYPE_CHECKING:
    from kafka_jobs.worker.runner import Worker

PARTITIONS = 6
CONCURRENCY = 4
KEYS = 64
TASK_NAME = "bench.noop"
TIME_CHECK_EVERY = 1024  # loop iterations between deadline checks

KJ, RAW, CELERY, CELERY_DEFAULT = "kafka-jobs", "raw", "celery", "celery-default"
SIDES = (KJ, RAW, CELERY, CELERY_DEFAULT)
ENQUEUE, ENQUEUE_CALLS, WORKER = "enqueue", "enqueue-calls", "worker"
MEASUREMENTS = (ENQUEUE, ENQUEUE_CALLS, WORKER)


# --- results ------------------------------------------------------------------


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    ratio = a / b
    return f"{ratio:.0%}" if ratio < 10 else f"{ratio:.1f}x"


# --- the jobs -------------------------------------------------------------------


class Meter:
    """Counts no-op runs across threads: time of the first run and of the `target`-th."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self._next = itertools.count(1)

    def hit(self) -> None:
        count = next(self._next)  # atomic under the GIL
        self.seen = count
        if count == 1:
            self.first = time.perf_counter()
        if count == self.target:
            self.last = time.perf_counter()
            self.done.set()

    def figure(self, started: float) -> Figure:
        """Rate over the runs after the first one, from the first run to the last."""
        return Figure(
            jobs=self.target - 1, seconds=self.last - self.first, startup=self.first - started
        )


def make_app(bootstrap: str, group_id: str | None = None) -> App:
    """An App on the broker with the benchmark's group timeouts (env security settings kept)."""
    env = Settings.from_env()
    return App(
        Settings(
            bootstrap_servers=bootstrap,
            group_id=group_id or common.unique("bench-g"),
            kafka_config={**env.kafka_config, "logger": common.LIBRDKAFKA_LOG},
            consumer_config={**env.consumer_config, **common.GROUP_CONFIG},
        )
    )


def register(app: App, topic: str, body: Callable[[], None] | None = None) -> Task[Any, Any]:
    """The benchmark task `bench.noop(i, key)` on `topic`, keyed by `key`."""
    run = body or (lambda: None)

    def noop(i: int, key: str) -> None:
        run()

    return app.job(topic=topic, key="key", name=TASK_NAME)(noop)


def raw_record(i: int, task: bytes) -> tuple[bytes, bytes, Headers]:
    """The (value, key, headers) kafka-jobs would produce for `noop.delay(i, f"k{i % 64}")`."""
    key = f"k{i % KEYS}"
    key_bytes = key.encode()
    value = json.dumps({"args": [i, key], "kwargs": {}}, separators=(",", ":")).encode()
    headers: Headers = [
        ("kj-version", b"1"),
        ("kj-task", task),
        ("kj-id", uuid.uuid4().hex.encode()),
        ("kj-attempt", b"1"),
        ("kj-enqueued-at", str(time.time_ns() // 1_000_000).encode()),
        ("content-type", b"application/json"),
        ("kj-key", key_bytes),
    ]
    return value, key_bytes, headers


def check_raw_record() -> None:
    """Fail fast if the hand-built raw record drifted from `kafka_jobs.wire`."""
    value, key, headers = raw_record(7, TASK_NAME.encode())
    job_id = dict(headers)["kj-id"]
    assert isinstance(job_id, bytes)
    expected = encode_headers(TASK_NAME, job_id.decode(), key, enqueued_at_ms=0)
    normalise = [(n, b"0" if n == "kj-enqueued-at" else v) for n, v in headers]
    if value != encode_value((7, "k7"), {}) or normalise != expected:
        raise SystemExit(f"raw record differs from kafka_jobs.wire: {headers} vs {expected}")


def deadline_passed(i: int, deadline: float) -> bool:
    return i % TIME_CHECK_EVERY == 0 and time.monotonic() > deadline


# --- enqueue ----------------------------------------------------------------------


def enqueue_kafka_jobs(bootstrap: str, n: int, timeout: float) -> Figure:
    topic = common.create_topic(bootstrap, "bench-enq-kj", PARTITIONS)
    app = make_app(bootstrap)
    noop = register(app, topic)
    app.producer.client.list_topics(topic, timeout=10)  # connect before timing
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    for i in range(n):
        if deadline_passed(i, deadline):
            return Figure(error=f"only {i} of {n} enqueued within {timeout}s")
        noop.delay(i, f"k{i % KEYS}")
    loop = time.perf_counter() - started
    app.flush(max(1.0, deadline - time.monotonic()))  # raises if a delivery failed
    return Figure(jobs=n, seconds=time.perf_counter() - started, loop=loop)


def enqueue_raw(bootstrap: str, n: int, timeout: float) -> Figure:
    topic = common.create_topic(bootstrap, "bench-enq-raw", PARTITIONS)
    producer = Producer(make_app(bootstrap).settings.producer_settings())
    producer.list_topics(topic, timeout=10)  # connect before timing
    task = TASK_NAME.encode()
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    for i in range(n):
        if deadline_passed(i, deadline):
            return Figure(error=f"only {i} of {n} produced within {timeout}s")
        value, key, headers = raw_record(i, task)
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
    loop = time.perf_counter() - started
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    figure = Figure(jobs=n, seconds=time.perf_counter() - started, loop=loop)
    if left:
        figure.error = f"{left} of {n} records still undelivered after the flush"
    return figure


# --- worker -------------------------------------------------------------------------


def prefill(bootstrap: str, topic: str, n: int, keys: int = KEYS) -> None:
    """`n` kafka-jobs records of `bench.noop` on `topic`, keyed `k{i % keys}`."""
    app = make_app(bootstrap)
    noop = register(app, topic)
    for i in range(n):
        noop.delay(i, f"k{i % keys}")
    app.flush(60)  # raises if a delivery failed


def prefilled_topic(bootstrap: str, prefix: str, n: int) -> str:
    """A fresh topic holding `n` kafka-jobs records of `bench.noop`."""
    topic = common.create_topic(bootstrap, prefix, PARTITIONS)
    prefill(bootstrap, topic, n)
    return topic


def time_worker(
    app: App,
    meter: Meter,
    timeout: float,
    concurrency: int = CONCURRENCY,
    wait: Callable[[Worker], bool] | None = None,
) -> Figure:
    """Run `app.worker(concurrency=...)` until `meter` is done; the meter's figure.

    `wait(worker)` waits for the meter (default: at most `timeout` seconds) and
    tells whether it is done; the worker is stopped either way.
    """
    worker = app.worker(concurrency=concurrency)
    started = time.perf_counter()
    worker.start()
    try:
        finished = wait(worker) if wait is not None else meter.done.wait(timeout)
    finally:
        worker.stop()
        if not worker.join(60):
            common.progress("    warning: the kafka-jobs worker did not stop within 60 s")
    if worker.crashed is not None:
        return Figure(error=f"worker crashed: {worker.crashed!r}")
    if not finished:
        return Figure(error=f"only {meter.seen} of {meter.target} jobs ran within {timeout}s")
    return meter.figure(started)


def worker_kafka_jobs(bootstrap: str, n: int, timeout: float) -> Figure:
    topic = prefilled_topic(bootstrap, "bench-work-kj", n)
    app = make_app(bootstrap, common.unique("bench-g-kj"))
    meter = Meter(n)
    register(app, topic, meter.hit)
    return time_worker(app, meter, timeout)


def worker_raw(bootstrap: str, n: int, timeout: float) -> Figure:
    topic = prefilled_topic(bootstrap, "bench-work-raw", n)
    config = make_app(bootstrap).settings.consumer_settings(common.unique("bench-g-raw"))
    meter = Meter(n)

    def noop(i: int, key: str) -> None:
        meter.hit()

    consumer = Consumer(config)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([topic])
        last_commit = time.monotonic()
        while meter.seen < n and time.monotonic() < deadline:
            for record in consumer.consume(1000, 0.1):
                if record.error() is not None:
                    continue
                call = json.loads(record.value())  # type: ignore[arg-type]
                noop(*call["args"], **call["kwargs"])
            now = time.monotonic()
            if now - last_commit >= 1.0:
                last_commit = now
                positions = consumer.position(consumer.assignment())
                offsets = [tp for tp in positions if tp.offset >= 0]
                if offsets:
                    consumer.commit(offsets=offsets, asynchronous=True)
    finally:
        consumer.close()
    if not meter.done.is_set():
        return Figure(error=f"only {meter.seen} of {n} records processed within {timeout}s")
    return meter.figure(started)


# --- celery -------------------------------------------------------------------------

# kombu's virtual transport sleeps `polling_interval` (default 1 s) whenever the
# channel cannot take a message (the prefetch window is full) or the queue is
# empty; its Kafka channel waits up to `wait_time_seconds` (default 5 s) in poll().
CELERY_TUNED_OPTIONS: dict[str, Any] = {"polling_interval": 0.01, "wait_time_seconds": 0.5}
CELERY_STALL_SECONDS = 10.0


@dataclass
class CeleryRun:
    """The celery figures of one run."""

    enqueue: Figure
    tuned: Figure
    default: Figure


def celery_broker_url(bootstrap: str) -> str:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return f"confluentkafka://{host}:{port}"


def celery_run(bootstrap: str, n: int, n_default: int, timeout: float, workdir: Path) -> CeleryRun:
    """Enqueue `n` (timed), run a tuned worker on them; pre-fill `n_default`, run a default one."""
    broker_url = celery_broker_url(bootstrap)
    queue = common.create_topic(bootstrap, "bench-celery", 1)
    enqueue = celery_enqueue(broker_url, queue, n, timeout)
    if enqueue.error is not None:
        skipped = Figure(error="skipped: the celery enqueue failed")
        return CeleryRun(enqueue, skipped, skipped)
    common.progress(f"    celery enqueue: {describe(enqueue)}; tuned worker ...")
    tuned = celery_worker(broker_url, queue, n + 1, CELERY_TUNED_OPTIONS, timeout, workdir)
    common.progress(
        f"    celery tuned worker: {describe(tuned)}; pre-fill for the default worker ..."
    )
    queue = common.create_topic(bootstrap, "bench-celery-default", 1)
    prefill = celery_enqueue(broker_url, queue, n_default, timeout)
    if prefill.error is not None:
        return CeleryRun(enqueue, tuned, Figure(error=f"pre-fill failed: {prefill.error}"))
    default = celery_worker(broker_url, queue, n_default + 1, {}, timeout, workdir)
    return CeleryRun(enqueue, tuned, default)


def celery_enqueue(broker_url: str, queue: str, n: int, timeout: float) -> Figure:
    """`n` timed `apply_async` calls after one untimed call that connects."""
    os.environ["BENCH_CELERY_BROKER"] = broker_url
    from bench import celery_app

    app = celery_app.app
    app.conf.broker_url = broker_url
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "kafka_common_config": {"logger": common.LIBRDKAFKA_LOG},
    }
    noop = celery_app.noop
    try:
        noop.apply_async((-1, "warm-up"), queue=queue)
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        for i in range(n):
            if deadline_passed(i, deadline):
                return Figure(error=f"only {i} of {n} sent within {timeout}s")
            noop.apply_async((i, f"k{i % KEYS}"), queue=queue)
        return Figure(jobs=n, seconds=time.perf_counter() - started)
    except Exception as exc:
        return Figure(error=f"send failed: {exc!r}")
    finally:
        app.close()  # drops the transport's producers before the broker goes away


def celery_worker(
    broker_url: str,
    queue: str,
    n: int,
    transport_options: dict[str, Any],
    timeout: float,
    workdir: Path,
    concurrency: int = CONCURRENCY,
    sleep: float = 0.0,
    mark: int = 0,
    progress_every: float = 0.0,
) -> Figure:
    """Run `celery worker --pool threads -c <concurrency>` on `queue` until `n` jobs ran.

    Each job sleeps `sleep` seconds before it counts; with a sleep, the run is
    timed from the first job's start to the last one's end, and `figure.head` gives
    the rate up to the `mark`-th job (if > 0) the same way. Bounded: stops after
    `timeout` seconds, or `CELERY_STALL_SECONDS` without progress; the rate is
    then taken over the jobs that did run. Prints the count every `progress_every`
    seconds (if > 0).
    """
    counter = workdir / f"{queue}.json"
    log_path = workdir / f"{queue}.log"
    env = dict(os.environ)
    env.update(
        BENCH_CELERY_BROKER=broker_url,
        BENCH_CELERY_QUEUE=queue,
        BENCH_CELERY_TARGET=str(n),
        BENCH_CELERY_COUNTER_FILE=str(counter),
        BENCH_CELERY_TRANSPORT_OPTIONS=json.dumps(transport_options),
        BENCH_CELERY_SLEEP=str(sleep),
        BENCH_CELERY_MARK=str(mark),
        PYTHONPATH=os.pathsep.join(p for p in (str(common.ROOT), env.get("PYTHONPATH")) if p),
    )
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_app",
        "worker",
        "--pool",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    ]
    started_wall = time.time()
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    ended = "timed out"
    process = common.spawn(command, env, log_path)
    try:
        progressed = printed = time.monotonic()
        while time.monotonic() < deadline:
            if process.poll() is not None:
                ended = f"worker exited with code {process.returncode}"
                break
            latest = read_counter(counter)
            if latest.get("count", 0) != state.get("count", 0):
                state, progressed = latest, time.monotonic()
            if state.get("count", 0) >= n:
                ended = "done"
                break
            if progress_every > 0 and time.monotonic() - printed >= progress_every:
                printed = time.monotonic()
                common.progress(f"    celery worker: {state.get('count', 0)} of {n} jobs done")
            if state and time.monotonic() - progressed > CELERY_STALL_SECONDS:
                ended = "stalled"
                break
            time.sleep(0.1)
    finally:
        common.stop_process(process, 20)  # warm shutdown first
    count = int(state.get("count", 0))
    if count < 2:
        return Figure(
            error=f"{count} of {n} jobs ran ({ended} after {time.time() - started_wall:.0f} s);"
            f" log tail: {log_tail(log_path)}"
        )
    figure = Figure(
        jobs=count - 1,
        seconds=float(state["last"]) - float(state["first"]),
        startup=float(state["first_wall"]) - started_wall,
    )
    if sleep > 0 and state.get("first_start"):
        # Jobs that take time: from the first job's start to the last one's end, all jobs.
        figure.jobs = count
        figure.seconds = float(state["last"]) - float(state["first_start"])
        if mark and state.get("mark"):
            figure.head = Figure(
                jobs=mark, seconds=float(state["mark"]) - float(state["first_start"])
            )
    if count < n:
        figure.note = (
            f"{ended}: {count} of {n} jobs ran"
            + (
                f", none in the {CELERY_STALL_SECONDS:.0f} s after the last one"
                if ended == "stalled"
                else ""
            )
            + "; rate over the jobs that ran"
        )
    return figure


def read_counter(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    tail = [line.strip() for line in text[-lines:] if line.strip()]
    return " | ".join(tail) or "(empty log)"


# --- report ---------------------------------------------------------------------------


ROWS: list[tuple[str, str, str]] = [
    ("enqueue incl. final flush (jobs/s)", ENQUEUE, CELERY),
    ("enqueue calls alone, before the flush (calls/s)", ENQUEUE_CALLS, CELERY),
    (
        f"worker, no-op jobs, {PARTITIONS} partitions (jobs/s);"
        " celery tuned (polling_interval 0.01 s, wait_time_seconds 0.5 s)",
        WORKER,
        CELERY,
    ),
    (
        "worker, same kafka-jobs/raw figures;"
        " celery with kombu defaults (polling_interval 1 s, wait_time_seconds 5 s)",
        WORKER,
        CELERY_DEFAULT,
    ),
]

HEADER = [
    "measurement",
    "kafka-jobs",
    "raw confluent-kafka",
    "kafka-jobs / raw",
    "celery (kombu confluentkafka://)",
    "kafka-jobs / celery",
]


def table_rows(results: Results) -> list[list[str]]:
    rows = []
    for title, measurement, celery_side in ROWS:
        if celery_side == CELERY_DEFAULT and not results.figures[measurement][celery_side]:
            continue  # celery skipped
        kj = results.median(measurement, KJ)
        raw = results.median(measurement, RAW)
        celery = results.median(measurement, celery_side)
        rows.append(
            [
                title,
                fmt_rate(kj),
                fmt_rate(raw),
                fmt_ratio(kj, raw),
                fmt_rate(celery),
                fmt_ratio(kj, celery),
            ]
        )
    return rows


def median_startup(results: Results, measurement: str, side: str) -> float | None:
    """Median seconds from a worker's start to its first job, over the runs that had one."""
    values = [f.startup for f in results.figures[measurement][side] if f.startup is not None]
    return statistics.median(values) if values else None


def summary_cells(
    date: str, load_average: str, args: argparse.Namespace, results: Results
) -> list[list[str]]:
    """The headline figures of this run, for the side-by-side table of every broker."""
    cells: list[list[str]] = []
    for label, measurement in (
        ("enqueue incl. final flush", ENQUEUE),
        ("enqueue calls alone", ENQUEUE_CALLS),
        ("worker, no-op jobs", WORKER),
    ):
        kj, raw = results.median(measurement, KJ), results.median(measurement, RAW)
        cells += [
            [f"{label}: kafka-jobs", fmt_rate(kj)],
            [f"{label}: raw confluent-kafka", fmt_rate(raw)],
            [f"{label}: **kafka-jobs / raw**", fmt_ratio(kj, raw)],
        ]
        if measurement == ENQUEUE_CALLS or args.no_celery:
            continue
        celery = results.median(measurement, CELERY)
        tuned = " (tuned)" if measurement == WORKER else ""
        cells += [
            [f"{label}: celery confluentkafka://{tuned}", fmt_rate(celery)],
            [f"{label}: kafka-jobs / celery{tuned}", fmt_ratio(kj, celery)],
        ]
        if measurement == WORKER and results.figures[WORKER][CELERY_DEFAULT]:
            default = results.median(WORKER, CELERY_DEFAULT)
            cells.append([f"{label}: celery at kombu defaults", fmt_rate(default)])
    startups = [median_startup(results, WORKER, side) for side in (KJ, RAW)]
    cells.append(
        [
            "worker start to first job (group join), kafka-jobs / raw",
            " / ".join("n/a" if v is None else f"{v:.1f} s" for v in startups),
        ]
    )
    cells += [
        ["date", date],
        ["load average (1 min) at start / end", load_average],
        ["jobs per run (kafka-jobs and raw) x runs", f"{args.jobs:,} x {args.runs}"],
    ]
    return cells


def results_section(
    handle: common.BrokerHandle,
    command: str,
    date: str,
    args: argparse.Namespace,
    results: Results,
    load_average: str,
) -> str:
    """This run's full report: a `###` section of the results file for this broker."""
    out = [f"### On {handle.name}", ""]
    out += [
        *common.report_head(command, date, load_average),
        f"- broker: {handle.description}",
        f"- jobs per run: {args.jobs} (kafka-jobs and raw), {args.celery_jobs} (celery enqueue"
        f" and tuned worker), {args.celery_default_jobs} (celery worker at kombu defaults);"
        f" {args.runs} runs; topics of {PARTITIONS} partitions (celery: 1);"
        f" worker concurrency {CONCURRENCY} threads",
        "",
        f"#### Medians of {args.runs} runs ({handle.name})",
        "",
        common.markdown_table(HEADER, table_rows(results)),
        "",
        "Targets (issue 21): enqueue kafka-jobs / raw >= 60%, worker kafka-jobs / raw >= 25%.",
        "",
        f"#### Per run (jobs/s, {handle.name})",
        "",
    ]
    per_run_header = ["measurement", "side", *(f"run {r + 1}" for r in range(args.runs))]
    per_run_rows = []
    for measurement in MEASUREMENTS:
        per_run_rows += results.per_run_rows(measurement, SIDES, args.runs)
        kj, raw = results.figures[measurement][KJ], results.figures[measurement][RAW]
        ratios = [fmt_ratio(a.rate, b.rate) for a, b in zip(kj, raw, strict=False)]
        per_run_rows.append([measurement, "kafka-jobs / raw", *ratios])
    out += [common.markdown_table(per_run_header, per_run_rows), ""]
    out += common.details(
        (
            (f"{measurement} {side}", results.figures[measurement][side])
            for measurement in MEASUREMENTS
            for side in SIDES
        ),
        "did not complete",
    )
    out.append("")
    if results.notes:
        out += [f"#### Notes ({handle.name})", "", *(f"- {note}" for note in results.notes), ""]
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser(
        "bench.throughput", __doc__, 50_000, "jobs per kafka-jobs/raw run", appends=False
    )
    common.add_options(
        parser,
        ("--celery-jobs", 2000, "jobs per celery enqueue/tuned worker run"),
        (
            "--celery-default-jobs",
            300,
            "jobs per run of the celery worker at kombu's default transport options",
        ),
        ("--no-celery", False, "skip the celery measurements"),
        ("--timeout", 120.0, "seconds allowed per kafka-jobs/raw step"),
        ("--celery-timeout", 60.0, "seconds allowed per celery step"),
    )
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.runs < 1 or args.celery_jobs < 2 or args.celery_default_jobs < 2:
        parser.error("job counts must be at least 2, --runs at least 1")
    return args


def run_once(
    tag: str, bootstrap: str, args: argparse.Namespace, results: Results, workdir: Path
) -> None:
    """One run of every measurement."""
    steps: list[tuple[str, str, Callable[[], Figure]]] = [
        (ENQUEUE, KJ, lambda: enqueue_kafka_jobs(bootstrap, args.jobs, args.timeout)),
        (ENQUEUE, RAW, lambda: enqueue_raw(bootstrap, args.jobs, args.timeout)),
        (WORKER, KJ, lambda: worker_kafka_jobs(bootstrap, args.jobs, args.timeout)),
        (WORKER, RAW, lambda: worker_raw(bootstrap, args.jobs, args.timeout)),
    ]
    for measurement, side, step in steps:
        results.measure(
            tag, measurement, side, step, ENQUEUE_CALLS if measurement == ENQUEUE else None
        )
    if args.no_celery:
        return
    common.progress(
        f"{tag} celery: enqueue + tuned worker ({args.celery_jobs} jobs),"
        f" worker at kombu defaults ({args.celery_default_jobs} jobs) ..."
    )
    try:
        run = celery_run(
            bootstrap, args.celery_jobs, args.celery_default_jobs, args.celery_timeout, workdir
        )
    except Exception as exc:
        failed = Figure(error=repr(exc))
        run = CeleryRun(failed, failed, failed)
    results.add(ENQUEUE, CELERY, run.enqueue)
    results.add(WORKER, CELERY, run.tuned)
    results.add(WORKER, CELERY_DEFAULT, run.default)
    common.progress(f"{tag} enqueue celery: {describe(run.enqueue)}")
    common.progress(f"{tag} worker celery tuned: {describe(run.tuned)}")
    common.progress(f"{tag} worker celery kombu defaults: {describe(run.default)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.throughput")
    check_raw_record()
    results = Results(MEASUREMENTS, SIDES)
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        bootstrap = handle.bootstrap
        common.progress(f"broker: {handle.description} at {bootstrap}")
        common.progress("warm-up (untimed): 2000 jobs through the kafka-jobs and the raw producer")
        enqueue_kafka_jobs(bootstrap, 2000, args.timeout)
        enqueue_raw(bootstrap, 2000, args.timeout)
        for r in range(args.runs):
            run_once(f"[run {r + 1}/{args.runs}]", bootstrap, args, results, Path(tmp))
    load_average = invocation.load_average()
    results.notes += general_notes(handle.kind)
    results.notes += celery_notes(results) if not args.no_celery else []
    print()
    print(f"broker: {handle.description}")
    print(common.text_table(HEADER, table_rows(results)))
    common.record_side_by_side(
        args.out,
        "throughput",
        handle.kind,
        handle.name,
        results_section(handle, invocation.command, invocation.date, args, results, load_average),
        summary_cells(invocation.date, load_average, args, results),
    )
    failed = any(
        f.error is not None
        for side in (KJ, RAW)
        for m in MEASUREMENTS
        for f in results.figures[m][side]
    )
    return 1 if failed else 0


def general_notes(kind: str) -> list[str]:
    """Notes on how the figures were taken; `kind`: the broker (`BrokerHandle.kind`)."""
    join = {
        "embedded": " (about 3 s: Tansu completes a join after about half of"
        " session.timeout.ms = 6 s)",
        "apache": " (Apache Kafka: group.initial.rebalance.delay.ms 0, so a lone member"
        " joins at once)",
    }.get(kind, "")
    notes = [
        "workers are timed from the first job run to the N-th (the rate counts the N-1 jobs"
        f" after the first); the consumer-group join{join} is excluded and shown as"
        " 'first job after'.",
        *GENERAL_NOTES,
    ]
    if kind == "embedded":
        notes.append(
            "Tansu's ListOffsets reports wrong high watermarks (about one per produced batch),"
            " so delivery is checked through delivery reports (`app.flush()` raises on a failed"
            " delivery, raw `flush()` must return 0) and by the workers reaching N."
        )
    if kind == "apache":
        notes.append(
            "Apache Kafka runs as one JVM (combined broker and controller, heap 512 MiB) on"
            " the same 2 CPUs, writing its log segments to local disk (ext4; no fsync per"
            " message: Kafka's defaults leave flushing to the OS)."
        )
    return notes


GENERAL_NOTES = [
    "raw enqueue uses the kafka-jobs producer settings (linger.ms 5, enable.idempotence)"
    " and builds the same key, header list and JSON value (checked against kafka_jobs.wire"
    " at start); kafka-jobs additionally tracks every delivery (EnqueuedJob + callback).",
    "raw worker uses the kafka-jobs consumer settings (cooperative-sticky, manual commits,"
    " session.timeout.ms 6000, heartbeat.interval.ms 1000) and commits its positions"
    " asynchronously once a second, like the kafka-jobs listener; it does not decode or"
    " validate headers, which kafka-jobs does for every record.",
    "one warm-up of 2000 jobs through both producers runs before the first measurement.",
    "enqueue time includes the final flush, i.e. waiting for the broker to acknowledge"
    " every record; that wait can be a large and variable share of the total."
    " The details give the time spent in the enqueue calls alone (Python and librdkafka"
    " client cost) and the flush separately.",
    "the machine's CPUs are shared by the broker, the benchmark process (producer, worker"
    " threads, librdkafka threads) and the celery worker subprocess: figures are CPU-bound"
    " and vary by 10-30% between runs.",
]


def celery_notes(results: Results) -> list[str]:
    """Plain-language notes on what the celery runs showed (kombu 5.x `confluentkafka://`)."""
    notes: list[str] = []
    figures = [
        f
        for m in MEASUREMENTS
        for side in (CELERY, CELERY_DEFAULT)
        for f in results.figures[m][side]
    ]
    if not figures:
        return notes
    if all(f.error is not None for f in figures):
        return ["every celery step failed; see the details above for the error and log tail"]
    notes.append(
        "celery enqueue: kombu's Kafka channel `_put()` calls `producer.produce()` and then"
        " `producer.flush()` for every message, so each `apply_async` waits for a broker"
        " round trip; kafka-jobs and the raw loop batch (linger.ms 5) and flush once."
    )
    notes.append(
        "celery worker: kombu acks every message with a synchronous `consumer.commit()` of the"
        " consumer's current positions, called from the pool thread that starts the task"
        " (acks_late off), while the worker's main thread keeps calling `consumer.poll()` on"
        " the same consumer. With confluent-kafka 2.16 a synchronous commit does not complete"
        " while another thread is inside poll() on that consumer; it gets through only in the"
        " gaps between polls (reproduced outside celery: 0.3 ms alone, 11-15 s while a second"
        " thread polls back to back, 0.8 ms with 50 ms pauses between polls)."
    )
    notes.append(
        "celery worker at kombu defaults: once the prefetch window (concurrency x"
        " worker_prefetch_multiplier = 16 unacked messages) is full, kombu's virtual transport"
        " sleeps `polling_interval` (1 s), so the worker runs about one window per second."
        " When the topic is drained, the worker loop calls `poll(wait_time_seconds=5)` back to"
        " back (its drain timeout is 2 s, so it never sleeps in between) and the pool threads"
        " blocked in the ack-commit never get through: the last jobs received do not run for"
        " as long as the queue stays empty (35 s until shutdown in a manual check)."
    )
    stalled = [f for f in results.figures[WORKER][CELERY_DEFAULT] if f.note and "stalled" in f.note]
    if stalled:
        notes.append(
            f"observed here: {len(stalled)} of {len(results.figures[WORKER][CELERY_DEFAULT])}"
            " celery runs at kombu defaults stalled before the end ("
            + "; ".join((f.note or "").split(",")[0].removeprefix("stalled: ") for f in stalled)
            + "); their rate is over the jobs that ran."
        )
    notes.append(
        "celery tuned: transport options polling_interval 0.01 s and wait_time_seconds 0.5 s"
        " (both documented kombu options) leave gaps between polls, so the acks get through"
        " and the worker drains the topic; this is the fairer celery worker figure."
    )
    notes.append(
        "celery worker flags: --pool threads -c 4 --without-gossip --without-mingle"
        " --without-heartbeat, worker_enable_remote_control=False (the Kafka transport has no"
        " fanout exchange for the pidbox), results ignored, no task events; one partition per"
        " celery topic (kombu creates and consumes topics with one partition by default)."
    )
    return notes


if __name__ == "__main__":
    sys.exit(main())
