"""Celery on three brokers: `.delay()` rate, worker throughput and inspect, in one run.

    python -m bench.celery_brokers [--broker embedded|apache] [--jobs N] [--runs R]
        [--concurrency C] [--inspect-calls K] [--out bench/RESULTS.md]

Brokers (the same Celery app, `bench/celery_app.py`, and the same no-op task):

kafkajobs
    this project's kombu transport, ``kafkajobs://HOST:PORT`` (`celery_bridge`), on a
    topic of ``--partitions`` partitions, consumer group timeouts shortened
    (``consumer_config`` session.timeout.ms 6000, heartbeat.interval.ms 1000) so the
    group join on the embedded broker takes about 3 s; a fresh group per run. Every
    other option at the transport's default (``buffer_size`` 10 000 unless
    ``--buffer-size`` sets it).
confluentkafka
    kombu's own ``confluentkafka://HOST:PORT`` transport, with the tuned transport
    options of `bench/throughput.py` (polling_interval 0.01 s, wait_time_seconds
    0.5 s): at kombu's defaults its worker stalls (see bench/RESULTS.md); one
    partition (kombu's default).
redis
    kombu's ``redis://`` transport on a ``redis-server`` started here on a free
    loopback port without persistence (installed with apt-get when missing and
    running as root), stopped by PID at the end; or ``--redis-url``.

References: the raw confluent-kafka limit on the same Kafka broker (`bench/throughput.py`'s
raw producer and consumer, kafka-jobs records on topics of 6 partitions), and Celery's
own `.delay()` cost on kombu's in-process ``memory://`` transport (no broker, no I/O;
no worker: that transport does not cross processes).

Both Kafka transports use `KAFKA_BOOTSTRAP_SERVERS` when set, else the broker of
`--broker` started here (default embedded Tansu; apache: one Apache Kafka KRaft node;
`bench.common.broker`).

Each run, for each broker, on a fresh queue:

.delay()
    one untimed ``noop.delay()`` (connects, declares the queue), then N timed
    ``noop.delay(i, key)`` calls from this process; the time includes the final
    flush where the transport batches (kafkajobs: ``transport.producer.flush()``,
    which also raises on a failed delivery). confluentkafka:// flushes inside every
    publish and Redis pushes synchronously, so they have nothing left to flush.
worker
    ``celery -A bench.celery_app worker --pool threads -c C`` started once the N + 1
    tasks are queued; timed from the first task run to the last of the N + 1 (the
    rate counts the N tasks after the first; start-up and group join excluded).
    Bounded by ``--timeout`` and stopped after 10 s without progress; a run that
    did not complete is marked and its rate is over the tasks that ran.

After the last run, on the same Kafka broker and redis-server:

inspect
    remote control round trips, kafkajobs:// against redis://, with
    `bench.celery_inspect`'s ``measure()``: one ``celery -A bench.celery_inspect worker
    -P threads -c 2`` per broker with remote control on and Celery's defaults otherwise
    (kafkajobs://: nothing but the URL), then ``--inspect-calls`` calls (default 20; 0
    skips the step) of each of ``ping``, ``stats``, ``conf``, ``active_queues`` and
    ``registered`` to that worker by name, each call timed. The calls are bounded by
    ``--timeout``, each by 5 s, the worker's first ping reply by 90 s.

Medians of ``--runs`` runs are reported, with the ratios kafkajobs / Redis worker
throughput (target >= 1.0), kafkajobs / confluentkafka:// `.delay()` rate (target
>= 20) and kafkajobs / raw confluent-kafka; and the median and 90th percentile of
each inspect command, with the ratio kafkajobs:// / redis://.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.pools

from bench import celery_app, celery_inspect, common
from bench.common import Figure, Results, describe, fmt_rate
from bench.throughput import (
    CELERY_STALL_SECONDS,
    CELERY_TUNED_OPTIONS,
    KEYS,
    celery_worker,
    check_raw_record,
    enqueue_raw,
    worker_raw,
)
from celery_bridge.options import BridgeOptions

KAFKAJOBS, CONFLUENT, REDIS = "kafkajobs", "confluentkafka", "redis"
DEFAULT_BUFFER_SIZE = BridgeOptions().buffer_size  # the transport's default
RAW, MEMORY = "raw", "memory"  # references: the client's limit, Celery's own .delay() cost
BROKERS = (MEMORY, KAFKAJOBS, CONFLUENT, REDIS)
SIDES = (RAW, *BROKERS)
DELAY, DELAY_CALLS, WORKER = "delay", "delay-calls", "worker"
MEASUREMENTS = (DELAY, DELAY_CALLS, WORKER)
INSPECT_SIDES = (KAFKAJOBS, REDIS)  # the brokers of the inspect step


def title(side: str, args: argparse.Namespace) -> str:
    return {
        RAW: "raw confluent-kafka (bench/throughput.py raw producer / consumer)",
        KAFKAJOBS: f"kafkajobs:// (celery_bridge), {buffer_text(args)}",
        CONFLUENT: "confluentkafka:// (kombu, tuned options)",
        REDIS: "redis:// (kombu)",
        MEMORY: "memory:// (kombu, in-process, no broker: Celery's own .delay() cost; no worker)",
    }[side]


def buffer_text(args: argparse.Namespace) -> str:
    if args.buffer_size:
        return f"buffer_size {args.buffer_size:,} (--buffer-size)"
    return f"buffer_size {DEFAULT_BUFFER_SIZE:,} (the default)"


PROGRESS_EVERY = 2.0  # seconds between progress lines
CHECK_EVERY = 256  # .delay() calls between deadline / progress checks
REDIS_START_TIMEOUT = 10.0
INSTALL_TIMEOUT = 600.0


# --- results ------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt_x(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.2f}x" if value < 10 else f"{value:.1f}x")


# --- Redis ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_executable() -> str:
    """`redis-server` on PATH; installs the Debian package first if missing (as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("redis-server is not on PATH (install the redis-server package)")
    common.progress("redis-server not found: apt-get update && apt-get install -y redis-server")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
        subprocess.run(
            command,
            check=True,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise RuntimeError("redis-server is still not on PATH after installing it")
    return found


@dataclass
class RedisHandle:
    url: str
    description: str


@contextmanager
def redis_server(external: str | None, workdir: Path, wanted: bool = True) -> Iterator[RedisHandle]:
    """`external` if given, else a fresh redis-server on a free loopback port, stopped after.

    Nothing is started when Redis is not `wanted` (not in `--brokers`).
    """
    if not wanted:
        yield RedisHandle("", "not used (redis not in --brokers)")
        return
    if external:
        yield RedisHandle(external, f"external Redis at {external} (--redis-url)")
        return
    executable = redis_executable()
    version = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    version_text = next((v.split("=", 1)[1] for v in version if v.startswith("v=")), "?")
    port = free_port()
    command = [
        executable,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
    ]
    process = common.spawn(command, dict(os.environ), workdir / "redis-server.log")
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not answer on port {port} within"
                        f" {REDIS_START_TIMEOUT:.0f} s (exit code {process.poll()})"
                    ) from None
                time.sleep(0.05)
        client.close()
        yield RedisHandle(
            f"redis://127.0.0.1:{port}/0",
            f"redis-server {version_text} (Debian package) on 127.0.0.1:{port},"
            " no persistence (--save '' --appendonly no), started by the benchmark",
        )
    finally:
        common.stop_process(process, 10)  # the process started here, by its PID


# --- .delay() ---------------------------------------------------------------------------


def kafka_url(scheme: str, bootstrap: str) -> str:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return f"{scheme}://{host}:{port}"


def flush_kafkajobs(app: Any, timeout: float) -> None:
    """Wait for every record the kafkajobs transport's producer holds; raise if one failed."""
    with app.connection_for_write() as connection:
        # Transports share one producer per configuration: the one .delay() used.
        connection.transport.producer.flush(timeout)


def celery_delay(
    side: str,
    broker_url: str,
    queue: str,
    n: int,
    transport_options: dict[str, Any],
    timeout: float,
    flush: Callable[[Any, float], None] | None,
) -> Figure:
    """One untimed `.delay()`, then `n` timed ones (and the final `flush`, if any)."""
    app, noop = celery_app.make_app(broker_url, queue, transport_options)
    try:
        noop.delay(-1, "warm-up")  # connects and declares the queue
        if flush is not None:
            flush(app, timeout)
        deadline = time.monotonic() + timeout
        printed = time.monotonic()
        started = time.perf_counter()
        for i in range(n):
            if i % CHECK_EVERY == 0 and i:
                now = time.monotonic()
                if now > deadline:
                    return Figure(error=f"only {i} of {n} sent within {timeout:.0f} s")
                if now - printed >= PROGRESS_EVERY:
                    printed = now
                    common.progress(f"    {side} .delay(): {i} of {n} sent")
            noop.delay(i, f"k{i % KEYS}")
        loop = time.perf_counter() - started
        if flush is not None:
            flush(app, max(1.0, deadline - time.monotonic()))
        return Figure(jobs=n, seconds=time.perf_counter() - started, loop=loop)
    except Exception as exc:
        return Figure(error=f"send failed: {exc!r}")
    finally:
        # kombu keeps producer pools in a process-wide registry keyed by the broker URL:
        # close and forget them all, so the next app on the same URL starts afresh.
        # Closing a kafkajobs connection also flushes its producer.
        kombu.pools.reset()  # type: ignore[no-untyped-call]
        app.close()


# --- one broker, one run ---------------------------------------------------------------------


@dataclass
class Broker:
    """How one side is set up in a run."""

    side: str
    url: str
    make_queue: Callable[[], str]
    delay_options: dict[str, Any]
    worker_options: Callable[[], dict[str, Any]] | None  # None: no worker run
    flush: Callable[[Any, float], None] | None


def scan_log(path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts of WARNING / ERROR / Traceback lines of a worker log, and the first few."""
    counts = {"WARNING": 0, "ERROR": 0, "Traceback": 0}
    first: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return counts, first
    for line in lines:
        hit = [k for k in counts if k in line]
        for k in hit:
            counts[k] += 1
        if hit and len(first) < 5:
            first.append(line.strip()[:300])
    return counts, first


def run_broker(
    tag: str, broker: Broker, args: argparse.Namespace, results: Results, workdir: Path
) -> None:
    queue = broker.make_queue()
    common.progress(f"{tag} {broker.side}: {args.jobs} tasks on queue {queue}")
    delay = results.measure(
        tag,
        DELAY,
        broker.side,
        lambda: celery_delay(
            broker.side,
            broker.url,
            queue,
            args.jobs,
            broker.delay_options,
            args.timeout,
            broker.flush,
        ),
        DELAY_CALLS,
    )
    if broker.worker_options is None:
        return
    if delay.error is not None:
        results.add(WORKER, broker.side, Figure(error="skipped: the .delay() step failed"))
        return
    common.progress(
        f"{tag} {broker.side} worker (--pool threads -c {args.concurrency})"
        f" on {args.jobs + 1} queued tasks ..."
    )
    worker = celery_worker(
        broker.url,
        queue,
        args.jobs + 1,
        broker.worker_options(),
        args.timeout,
        workdir,
        concurrency=args.concurrency,
        progress_every=PROGRESS_EVERY,
    )
    counts, first = scan_log(workdir / f"{queue}.log")
    if any(counts.values()):
        finding = (
            f"{broker.side} worker log ({workdir / (queue + '.log')}): "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + " line(s); first: "
            + " | ".join(first)
        )
        results.notes.append(finding)
        worker.note = (
            (worker.note + "; " if worker.note else "")
            + "log: "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        )
    results.add(WORKER, broker.side, worker)
    common.progress(f"{tag} {broker.side} worker: {describe(worker)}")


def run_raw(tag: str, bootstrap: str, args: argparse.Namespace, results: Results) -> None:
    results.measure(
        tag, DELAY, RAW, lambda: enqueue_raw(bootstrap, args.raw_jobs, args.timeout), DELAY_CALLS
    )
    results.measure(tag, WORKER, RAW, lambda: worker_raw(bootstrap, args.raw_jobs, args.timeout))


@dataclass
class InspectRun:
    """The inspect step: the round trips (ms) of each command, by broker, or its error."""

    times: dict[str, celery_inspect.Times] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # incl. the worker's start

    def measured(self) -> bool:
        return bool(self.times or self.errors)


def run_inspect(
    urls: dict[str, str], args: argparse.Namespace, results: Results, workdir: Path
) -> InspectRun:
    """`bench.celery_inspect.measure()` on each broker of INSPECT_SIDES in `--brokers`."""
    run = InspectRun()
    if args.inspect_calls <= 0:
        return run
    for side in INSPECT_SIDES:
        if side not in args.brokers:
            continue
        common.progress(
            f"inspect {side}: one worker with remote control on,"
            f" {args.inspect_calls} calls of each of {', '.join(celery_inspect.COMMANDS)}"
        )
        started = time.monotonic()
        try:
            run.times[side] = celery_inspect.measure(
                urls[side], args.inspect_calls, workdir, side, budget=args.timeout
            )
        except Exception as exc:
            run.errors[side] = repr(exc)
            common.progress(f"inspect {side} failed: {exc!r}")
        run.seconds[side] = time.monotonic() - started
        log = workdir / f"worker-{side}.log"  # measure()'s log for this tag
        counts, first = scan_log(log)
        if any(counts.values()):
            results.notes.append(
                f"inspect {side} worker log ({log}): "
                + ", ".join(f"{v} {k}" for k, v in counts.items())
                + " line(s); first: "
                + " | ".join(first)
            )
    return run


def brokers(bootstrap: str, redis_url: str, args: argparse.Namespace) -> list[Broker]:

    options: dict[str, Any] = {
        "consumer_config": dict(celery_app.GROUP_CONFIG),
        "topic_partitions": args.partitions,
    }
    if args.buffer_size:
        options["buffer_size"] = args.buffer_size
    made = {
        KAFKAJOBS: Broker(
            KAFKAJOBS,
            kafka_url("kafkajobs", bootstrap),
            lambda: common.create_topic(bootstrap, "bench-cb-kj", args.partitions),
            {**options, "kafka_config": {"logger": common.LIBRDKAFKA_LOG}},
            lambda: {**options, "group_id": common.unique("bench-cb-kj-g")},
            flush_kafkajobs,
        ),
        CONFLUENT: Broker(
            CONFLUENT,
            kafka_url("confluentkafka", bootstrap),
            lambda: common.create_topic(bootstrap, "bench-cb-ck", 1),
            {**CELERY_TUNED_OPTIONS, "kafka_common_config": {"logger": common.LIBRDKAFKA_LOG}},
            lambda: dict(CELERY_TUNED_OPTIONS),
            None,
        ),
        REDIS: Broker(
            REDIS, redis_url, lambda: common.unique("bench-cb-redis"), {}, lambda: {}, None
        ),
        MEMORY: Broker(
            MEMORY, "memory://localhost/", lambda: common.unique("bench-cb-mem"), {}, None, None
        ),
    }
    return [made[side] for side in BROKERS if side in args.brokers]


# --- report ---------------------------------------------------------------------------------


HEADER = [
    "broker",
    ".delay() incl. flush (calls/s)",
    ".delay() calls alone (calls/s)",
    "worker (tasks/s)",
    "worker vs Redis",
]


def table_rows(results: Results, sides: list[str], args: argparse.Namespace) -> list[list[str]]:
    redis_worker = results.median(WORKER, REDIS)
    rows = []
    for side in sides:
        worker = results.median(WORKER, side)
        incomplete = sum(1 for f in results.figures[WORKER][side] if f.note)
        worker_text = fmt_rate(worker) + (
            f" ({incomplete} run(s) incomplete)" if incomplete else ""
        )
        vs_redis = fmt_x(ratio(worker, redis_worker)) if side != REDIS else "1.00x"
        if side == MEMORY:
            worker_text = vs_redis = "-"
        rows.append(
            [
                title(side, args),
                fmt_rate(results.median(DELAY, side)),
                fmt_rate(results.median(DELAY_CALLS, side)),
                worker_text,
                vs_redis,
            ]
        )
    return rows


def inspect_rows(run: InspectRun) -> list[list[str]]:
    """`bench.celery_inspect`'s table: median and p90 per command and broker, the ratio."""
    return celery_inspect.table_rows(run.times.get(KAFKAJOBS), run.times.get(REDIS))


def inspect_lines(run: InspectRun) -> list[str]:
    """The inspect ratios (medians), the step's time and its errors."""
    if not run.measured():
        return []
    ratios = ", ".join(f"{row[0]} {row[-1]}" for row in inspect_rows(run))
    lines = [f"kafkajobs:// inspect round trip / redis:// inspect round trip (medians): {ratios}"]
    if run.seconds:
        lines.append(
            "inspect step, worker start included: "
            + ", ".join(f"{side} {seconds:.1f} s" for side, seconds in run.seconds.items())
        )
    lines += [f"inspect {side} FAILED: {error}" for side, error in run.errors.items()]
    return lines


def ratio_lines(results: Results, args: argparse.Namespace) -> list[str]:
    kj_worker = results.median(WORKER, KAFKAJOBS)
    kj_delay = results.median(DELAY, KAFKAJOBS)

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "n/a"
        return f"{fmt_x(value)} (target >= {target:g}: {'met' if value >= target else 'NOT met'})"

    return [
        "kafkajobs worker throughput / Redis worker throughput: "
        + verdict(ratio(kj_worker, results.median(WORKER, REDIS)), 1.0),
        "kafkajobs .delay() rate / confluentkafka:// .delay() rate: "
        + verdict(ratio(kj_delay, results.median(DELAY, CONFLUENT)), 20.0),
        "kafkajobs .delay() rate / raw confluent-kafka produce rate: "
        + fmt_x(ratio(kj_delay, results.median(DELAY, RAW)))
        + " (calls alone: "
        + fmt_x(ratio(results.median(DELAY_CALLS, KAFKAJOBS), results.median(DELAY_CALLS, RAW)))
        + ")",
        "kafkajobs worker throughput / raw confluent-kafka consume rate: "
        + fmt_x(ratio(kj_worker, results.median(WORKER, RAW))),
        "kafkajobs .delay() rate / memory:// .delay() rate (Celery's own ceiling): "
        + fmt_x(ratio(kj_delay, results.median(DELAY, MEMORY)))
        + "; memory:// / confluentkafka:// .delay(): "
        + fmt_x(ratio(results.median(DELAY, MEMORY), results.median(DELAY, CONFLUENT))),
        "kafkajobs .delay() rate / Redis .delay() rate: "
        + fmt_x(ratio(kj_delay, results.median(DELAY, REDIS))),
        "kafkajobs worker throughput / confluentkafka:// worker throughput: "
        + fmt_x(ratio(kj_worker, results.median(WORKER, CONFLUENT))),
    ]


def bridge_state() -> str:
    """HEAD and whether celery_bridge/ had uncommitted changes (read once, at the start)."""
    try:
        head = common.git("rev-parse", "--short", "HEAD").strip()
        dirty = common.git("status", "--porcelain", "--", "celery_bridge").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    if dirty:
        return f"commit {head} plus uncommitted changes to {len(dirty)} file(s) in celery_bridge/"
    return f"commit {head}, celery_bridge/ clean"


def notes(args: argparse.Namespace, results: Results) -> list[str]:
    out = [
        f"every broker gets the same {args.jobs} no-op tasks (`bench.noop(i, key)`, results"
        " ignored, no task events, remote control off) from one `.delay()` loop in the"
        " benchmark process, then one `celery worker --pool threads"
        f" -c {args.concurrency} --without-gossip --without-mingle --without-heartbeat`"
        " subprocess drains the backlog; worker_prefetch_multiplier is Celery's default (4).",
        "worker throughput is timed inside the task (a counter in `bench/celery_app.py`),"
        " from the first task run to the last (N + 1 tasks with the warm-up; the rate counts"
        " the N after the first), so worker start-up and the Kafka consumer-group join"
        " (about 3 s) are excluded; 'first task ... after start' in the details.",
        "kafkajobs:// transport options: consumer_config {session.timeout.ms: 6000,"
        f" heartbeat.interval.ms: 1000}}, topic_partitions {args.partitions}, a fresh"
        f" group_id per run; {buffer_text(args)}; every other option at its default"
        " (confirm_publish off: `.delay()` does not wait for the broker, the final"
        " `transport.producer.flush()` does, and is included in the time).",
        "confluentkafka:// runs with transport options polling_interval 0.01 s and"
        " wait_time_seconds 0.5 s, as in bench/throughput.py: at kombu's defaults its worker"
        " handles about one prefetch window per second and then stalls with the last"
        " tasks unrun (about 17 tasks/s, see the bench/throughput.py section). Its"
        " `_put()` flushes the producer after every message, so `.delay()` waits for a"
        " broker round trip each time; topic of 1 partition (kombu's default).",
        "memory://: kombu's in-process transport (a Python dict of queues: no broker, no"
        " network, no worker) measures what Celery and kombu themselves cost per `.delay()`"
        " (building the protocol-2 message, serialising, routing, the producer pool) on this"
        " machine: no transport can make `.delay()` faster than that.",
        "Redis: kombu's redis:// transport at its defaults; `.delay()` is one synchronous"
        " round trip (LPUSH) per call, so there is nothing to flush.",
        f"raw confluent-kafka: `bench/throughput.py`'s raw producer ({args.raw_jobs} records"
        " of kafka-jobs format, produce + poll(0) per record, then flush) and raw consumer"
        " (consume(1000) batches, json.loads per value, a no-op call, async commits), on"
        " topics of 6 partitions; its records are smaller than a Celery message (the"
        " Celery protocol-2 body and its headers are several hundred bytes), so it is an"
        " upper bound for what any Kafka transport could reach with this client.",
        "the machine's 2 CPUs are shared by the brokers (Tansu or Apache Kafka, and"
        " redis-server), the benchmark process and the worker subprocess; figures vary by"
        " 10-30% between runs.",
        f"a worker run stops after {args.timeout:.0f} s or {CELERY_STALL_SECONDS:.0f} s"
        " without progress; the worker logs (level WARNING) are scanned for WARNING, ERROR"
        " and Traceback lines.",
    ]
    if args.inspect_calls > 0:
        out.append(
            "inspect: after the last run, on the same Kafka broker and redis-server,"
            " `bench.celery_inspect.measure()` starts one `celery -A bench.celery_inspect"
            " worker -P threads -c 2 --without-mingle --without-gossip` per broker with"
            " remote control on and Celery's defaults otherwise (kafkajobs://: nothing but"
            f" the URL, not the options of the throughput runs), waits for its ping reply,"
            f" then times {args.inspect_calls} rounds of"
            f" {', '.join(celery_inspect.COMMANDS)} sent to it by name"
            " (`app.control.inspect([worker], timeout=5)`: Celery returns at that worker's"
            " reply); p90 is the 90th percentile of those calls."
        )
    if results.notes:
        out += [f"worker log: {finding}" for finding in results.notes]
    else:
        out.append("no WARNING, ERROR or Traceback line in any worker log.")
    return out


def section(
    invocation: common.Invocation,
    load_average: str,
    kafka_description: str,
    redis_description: str,
    bridge: str,
    args: argparse.Namespace,
    results: Results,
    sides: list[str],
    inspect: InspectRun,
) -> str:
    out = [
        "## Celery on three brokers: kafkajobs:// vs confluentkafka:// vs Redis"
        " (bench/celery_brokers.py)",
        "",
        "`.delay()` rate and `celery worker --pool threads` throughput of no-op tasks with the"
        " same Celery app (`bench/celery_app.py`) on each broker, and `inspect` round trips"
        " (kafkajobs:// and redis://); see the docstring of `bench/celery_brokers.py` for"
        " each measurement.",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- celery_bridge source: {bridge}",
        f"- Kafka broker: {kafka_description}",
        f"- Redis: {redis_description}",
        f"- tasks per run: {args.jobs} (celery brokers), {args.raw_jobs} (raw confluent-kafka);"
        f" {args.runs} runs, interleaved ({', '.join(sides)} in each run);"
        f" worker concurrency {args.concurrency} threads",
        f"- inspect: {inspect_setup(args, inspect)}",
        "",
        f"### Medians of {args.runs} runs",
        "",
        common.markdown_table(HEADER, table_rows(results, sides, args)),
        "",
        "Ratios (medians):",
        "",
        *(f"- {line}" for line in ratio_lines(results, args)),
        "",
    ]
    if inspect.measured():
        out += [
            f"### Inspect round trips ({args.inspect_calls} calls per command and broker)",
            "",
            common.markdown_table(celery_inspect.HEADER, inspect_rows(inspect)),
            "",
            *(f"- {line}" for line in inspect_lines(inspect)),
            "",
        ]
    out += [
        "### Per run",
        "",
    ]
    per_run_rows = [row for m in MEASUREMENTS for row in results.per_run_rows(m, sides, args.runs)]
    out += [
        common.markdown_table(
            ["measurement", "broker", *(f"run {r + 1}" for r in range(args.runs))], per_run_rows
        ),
        "",
    ]
    out += common.details(
        (
            (f"{measurement} {side}", results.figures[measurement][side])
            for measurement in (DELAY, WORKER)
            for side in sides
        ),
        "incomplete or with log lines",
    )
    out += common.notes_list(notes(args, results))
    return "\n".join(out)


def inspect_setup(args: argparse.Namespace, inspect: InspectRun) -> str:
    if args.inspect_calls <= 0:
        return "skipped (--inspect-calls 0)"
    if not inspect.measured():
        return "skipped (neither kafkajobs nor redis in --brokers)"
    return (
        f"{args.inspect_calls} calls of each command per broker"
        f" ({', '.join(s for s in INSPECT_SIDES if s in args.brokers)}), after the last run"
    )


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser("bench.celery_brokers", __doc__, 20_000, "tasks per broker and run")
    common.add_options(
        parser,
        ("--concurrency", 8, "celery worker threads (--pool threads -c)"),
        ("--partitions", 6, "partitions of the kafkajobs:// queue topic"),
        (
            "--buffer-size",
            0,
            "kafkajobs:// transport option buffer_size (default 0: the transport's default,"
            f" {DEFAULT_BUFFER_SIZE:,})",
        ),
        ("--raw-jobs", 50_000, "records per raw confluent-kafka produce / consume run"),
        (
            "--timeout",
            180.0,
            "seconds allowed per step (one .delay() loop, one worker run, one broker's"
            " inspect calls)",
        ),
        ("--redis-url", "", "use this Redis instead of starting redis-server"),
        ("--logs", "", "directory for the worker logs (default: a new one under /tmp, kept)"),
        (
            "--inspect-calls",
            20,
            "calls of each inspect command per broker (kafkajobs, redis), after the last"
            " run; 0: no inspect step",
        ),
    )
    parser.add_argument(
        "--brokers",
        default=",".join(SIDES),
        help=f"comma-separated subset of {','.join(SIDES)} (default: all)",
    )
    args = parser.parse_args(argv)
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in args.brokers if b not in SIDES]
    if unknown:
        parser.error(f"unknown broker(s) {unknown}; choose from {list(SIDES)}")
    if args.jobs < 2 or args.raw_jobs < 2 or args.runs < 1 or args.concurrency < 1:
        parser.error("job counts must be at least 2, --runs and --concurrency at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.celery_brokers")
    bridge = bridge_state()
    check_raw_record()
    sides = [s for s in SIDES if s in args.brokers]
    workdir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="bench-celery-"))
    workdir.mkdir(parents=True, exist_ok=True)
    common.progress(f"worker logs in {workdir}")
    results = Results(MEASUREMENTS, SIDES)
    with (
        common.broker(args.broker) as kafka,
        redis_server(args.redis_url or None, workdir, REDIS in args.brokers) as redis_handle,
    ):
        common.progress(f"Kafka broker: {kafka.description} at {kafka.bootstrap}")
        common.progress(f"Redis: {redis_handle.description}")
        celery_brokers = brokers(kafka.bootstrap, redis_handle.url, args)
        for r in range(args.runs):
            tag = f"[run {r + 1}/{args.runs}]"
            if RAW in sides:
                run_raw(tag, kafka.bootstrap, args, results)
            for broker in celery_brokers:
                try:
                    run_broker(tag, broker, args, results, workdir)
                except Exception as exc:
                    common.progress(f"{tag} {broker.side} failed: {exc!r}")
                    for measurement in MEASUREMENTS:
                        if len(results.figures[measurement][broker.side]) <= r:
                            results.add(measurement, broker.side, Figure(error=repr(exc)))
        inspect = run_inspect(
            {KAFKAJOBS: kafka_url("kafkajobs", kafka.bootstrap), REDIS: redis_handle.url},
            args,
            results,
            workdir,
        )
    load_average = invocation.load_average()
    print()
    print(common.text_table(HEADER, table_rows(results, sides, args)))
    print()
    for line in ratio_lines(results, args):
        print(line)
    if inspect.measured():
        print()
        print(common.text_table(celery_inspect.HEADER, inspect_rows(inspect)))
        print()
        for line in inspect_lines(inspect):
            print(line)
    for finding in results.notes:
        print(f"worker log: {finding}")
    text = section(
        invocation,
        load_average,
        kafka.description,
        redis_handle.description,
        bridge,
        args,
        results,
        sides,
        inspect,
    )
    common.append_section(args.out, text)
    failed = KAFKAJOBS in inspect.errors or any(
        f.error is not None or f.note is not None
        for m in MEASUREMENTS
        for f in results.figures[m][KAFKAJOBS]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
