"""The round trips of `bench/results.py`: delay() + get() against a raw request and reply.

See the docstring of `bench/results.py` for what is measured; `measure_round_trips` runs
one side: it starts the side's worker subprocess (`bench/results_app.py`), waits until it
answers a probe, times the sequential and the concurrent calls and stops it (by PID).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench import common
from bench.latency import fmt_ms, log_tail
from bench.results_app import TASK_NAME, echo
from kafka_jobs.app import App
from kafka_jobs.settings import Settings
from kafka_jobs.testing import wait_until

PARTITIONS = 6
PROBE_TIMEOUT = 0.5
STOP_TIMEOUT = 20.0

KJ, RAW_POLL, RAW_BATCH = "kafka-jobs", "raw poll()", "raw consume()"
RT_SIDES = (KJ, RAW_POLL, RAW_BATCH)
SEQ, CONC = "sequential", "concurrent"


# --- settings -------------------------------------------------------------------------------


def bench_settings(bootstrap: str, **fields: Any) -> Settings:
    """Settings on the broker with the benchmark's group timeouts (env security settings kept)."""
    env = Settings.from_env()
    return Settings(
        bootstrap_servers=bootstrap,
        group_id=fields.pop("group_id", None) or common.unique("bench-res-g"),
        kafka_config={**env.kafka_config, "logger": common.LIBRDKAFKA_LOG},
        consumer_config={**env.consumer_config, **common.GROUP_CONFIG},
        **fields,
    )


# --- round trips ----------------------------------------------------------------------------


@dataclass
class RoundTrips:
    """One run of one side and mode: round-trip times (ms) and how the run went."""

    latencies: list[float] = field(default_factory=list)
    expected: int = 0
    seconds: float = 0.0
    error: str | None = None

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (ms), None without figures or after a failure."""
        if self.error is not None or not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def describe(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        rate = len(self.latencies) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.latencies)} calls: p50 {fmt_ms(self.percentile(0.5))},"
            f" p90 {fmt_ms(self.percentile(0.9))}, p99 {fmt_ms(self.percentile(0.99))},"
            f" max {fmt_ms(self.percentile(1.0))}; {rate:,.0f} round trips/s"
        )


class Caller:
    """How one side makes a round trip: `call(i, timeout)` returns once `i` came back."""

    def __init__(self, call: Callable[[int, float], None], close: Callable[[], None]) -> None:
        self.call, self.close = call, close


def kafka_jobs_caller(bootstrap: str, topic: str, results_topic: str) -> Caller:
    """`bench.results.echo.delay(i).get(timeout)`, the app's shared results reader."""
    app = App(bench_settings(bootstrap, results_topic=results_topic))
    task = app.job(topic=topic, name=TASK_NAME, keep_result=True)(echo)
    app.producer.client.list_topics(topic, timeout=10)  # connected before the first call

    def call(i: int, timeout: float) -> None:
        value = task.delay(i).get(timeout=timeout)
        if value != i:
            raise RuntimeError(f"get() returned {value!r} for {i}")

    return Caller(call, lambda: app.close(10))


class RawCaller:
    """Request records out, replies with the same key read back by one consumer thread.

    Thread-safe: caller threads share the producer and the table of waiting keys.
    """

    def __init__(self, bootstrap: str, requests: str, replies: str) -> None:
        settings = bench_settings(bootstrap)
        self.requests = requests
        self.producer = Producer(settings.producer_settings())
        self.producer.list_topics(requests, timeout=10)
        self.consumer = Consumer(settings.consumer_settings(common.unique("bench-res-reply")))
        metadata = self.consumer.list_topics(replies, timeout=10).topics[replies]
        # A fresh reply topic: read it from its start, outside the group (no commits).
        self.consumer.assign([TopicPartition(replies, p, 0) for p in metadata.partitions])
        self._lock = threading.Lock()
        self._waiting: dict[bytes, tuple[threading.Event, list[bytes]]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-replies", daemon=True)
        self._thread.start()

    def call(self, i: int, timeout: float) -> None:
        key = uuid.uuid4().hex.encode()
        arrived = threading.Event()
        box: list[bytes] = []
        with self._lock:
            self._waiting[key] = (arrived, box)
        try:
            self.producer.produce(self.requests, json.dumps({"i": i}).encode(), key)
            self.producer.poll(0)
            if not arrived.wait(timeout):
                raise TimeoutError(f"no reply for {i} within {timeout}s")
        finally:
            with self._lock:
                self._waiting.pop(key, None)
        if json.loads(box[0])["i"] != i:
            raise RuntimeError(f"wrong reply for {i}: {box[0]!r}")

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        self.consumer.close()
        self.producer.flush(5)

    def _read(self) -> None:
        while not self._stopping.is_set():
            record = self.consumer.poll(0.1)
            if record is None or record.error() is not None:
                continue
            with self._lock:
                waiter = self._waiting.get(record.key() or b"")
            if waiter is not None:
                waiter[1].append(record.value() or b"")
                waiter[0].set()


def round_trips(caller: Caller, calls: int, callers: int, timeout: float, first: int) -> RoundTrips:
    """`calls` round trips by `callers` threads (each one call after the other), timed.

    Bounded: each call waits at most `timeout`; a thread stops at its first failure.
    """
    run = RoundTrips(expected=calls)
    latencies: list[list[float]] = [[] for _ in range(callers)]
    errors: list[str] = []

    def work(slot: int) -> None:
        for i in range(first + slot, first + calls, callers):
            began = time.perf_counter()
            try:
                caller.call(i, timeout)
            except Exception as exc:
                errors.append(f"call {i}: {exc!r}")
                return
            latencies[slot].append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in range(callers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        # Each thread ends within its calls x timeout; a call past that is a failure anyway.
        thread.join(timeout * math.ceil(calls / callers) + 10)
    run.seconds = time.perf_counter() - began
    run.latencies = [value for slot in latencies for value in slot]
    if errors or any(t.is_alive() for t in threads):
        run.error = errors[0] if errors else "a caller thread did not finish"
    return run


def wait_ready(caller: Caller, process: Any, ready_timeout: float, log: Path) -> str | None:
    """Probe calls until one comes back; None when ready, else why not."""
    deadline = time.monotonic() + ready_timeout
    probe = -1
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"worker exited with code {process.returncode}: {log_tail(log)}"
        try:
            caller.call(probe, PROBE_TIMEOUT)
            return None
        except Exception:
            probe -= 1
    return f"no probe call came back within {ready_timeout:.0f} s"


def topic_exists(bootstrap: str, topic: str) -> bool:
    """Whether the broker lists `topic` (asked without naming it: no auto-creation)."""
    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


@dataclass
class RoundTripRun:
    """The sequential and the concurrent round trips of one side in one run."""

    sequential: RoundTrips
    concurrent: RoundTrips
    startup: float | None = None


def measure_round_trips(
    side: str, bootstrap: str, args: argparse.Namespace, workdir: Path
) -> RoundTripRun:
    """Start the side's worker, wait until it answers, then time both modes; stop it."""
    topic = common.create_topic(bootstrap, "bench-res-rt", PARTITIONS)
    group = common.unique("bench-res-rt-g")
    log = workdir / f"{topic}.log"
    env = common.worker_env(bootstrap)
    env["PYTHONPATH"] = str(common.ROOT)
    results_topic = common.unique("bench-res-results")
    bound = args.ready_timeout + 2 * args.call_timeout * (args.calls + args.concurrent_calls) + 60
    if side == KJ:
        env.update(BENCH_RESULTS_TOPIC=topic, KAFKA_JOBS_RESULTS_TOPIC=results_topic)
        command = [sys.executable, "-m", "kafka_jobs", "--log-level", "warning", "worker"]
        command += ["-A", "bench.results_app", "-g", group]
    else:
        replies = common.create_topic(bootstrap, "bench-res-replies", PARTITIONS)
        mode = "poll" if side == RAW_POLL else "batch"
        command = [sys.executable, "-m", "bench.results_app", "raw", topic, replies, group]
        command += [mode, f"{bound}"]
    started = time.monotonic()
    process = common.spawn(command, env, log, cwd=common.ROOT)
    caller: Caller | None = None
    failed = RoundTrips(expected=args.calls)
    try:
        if side == KJ:
            # The worker creates the results topic; asking for it earlier could auto-create it.
            if not wait_until(
                lambda: topic_exists(bootstrap, results_topic), args.ready_timeout, 0.1
            ):
                failed.error = f"the worker created no results topic: {log_tail(log)}"
                return RoundTripRun(failed, failed)
            caller = kafka_jobs_caller(bootstrap, topic, results_topic)
        else:
            raw = RawCaller(bootstrap, topic, replies)
            caller = Caller(raw.call, raw.close)
        not_ready = wait_ready(caller, process, args.ready_timeout, log)
        if not_ready is not None:
            failed.error = not_ready
            return RoundTripRun(failed, failed)
        startup = time.monotonic() - started
        round_trips(caller, args.warmup, 1, args.call_timeout, 1_000_000)
        sequential = round_trips(caller, args.calls, 1, args.call_timeout, 0)
        concurrent = round_trips(
            caller, args.concurrent_calls, args.callers, args.call_timeout, args.calls
        )
        return RoundTripRun(sequential, concurrent, startup)
    finally:
        if caller is not None:
            caller.close()
        common.stop_process(process, STOP_TIMEOUT)


class Figures:
    """Every round-trip run, by side and mode."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], list[RoundTrips]] = {
            (side, mode): [] for side in RT_SIDES for mode in (SEQ, CONC)
        }
        self.startups: dict[str, list[float]] = {side: [] for side in RT_SIDES}

    def median(self, side: str, mode: str, q: float) -> float | None:
        """Median over the runs of the `q` percentile (ms), None without figures."""
        values = [v for run in self.runs[(side, mode)] if (v := run.percentile(q)) is not None]
        return statistics.median(values) if values else None
