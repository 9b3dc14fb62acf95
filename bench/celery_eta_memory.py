"""Celery worker memory with a million eta tasks waiting: kafkajobs:// against Redis.

    python -m bench.celery_eta_memory [--broker embedded|apache] [--tasks N]
        [--sides kafkajobs,redis] [--out bench/RESULTS.md]

Issue 19: a task whose eta lies further ahead than ``eta_threshold`` (10 s) goes, at
publish time, to a kafka-jobs delay tier topic (`celery_bridge.eta`), so the worker does
not hold it, its queue's committed offsets move on and its memory stays flat. On Redis,
Celery's worker takes every eta task from the queue at once and keeps it in memory
(unacked) until its eta. This measures both, the `bench/delayed_memory.py` way.

The Kafka broker is the one of ``--broker`` (`bench.common.broker`) or
``KAFKA_BOOTSTRAP_SERVERS``; Redis is a ``redis-server`` started here on a free loopback
port without persistence (`bench.celery_brokers.redis_server`). For each side
(kafkajobs:// on the Kafka broker, then redis://), on a fresh queue:

1. starts ONE worker, ``celery -A bench.celery_eta_memory_app worker -P threads -c 2
   --without-mingle --without-gossip`` (Celery's defaults otherwise; the broker is the
   bare URL: no transport options, no ``KAFKA_JOBS_*`` variable), and waits until it
   has run a plain task;
2. samples the worker's RSS (``/proc/PID/status`` VmRSS) every second to the end, and
   the broker's (the Kafka broker when started here, redis-server);
3. publishes N tasks (``app.send_task(..., countdown=c)`` from this process with one
   producer taken from the app's pool: Celery's real publish path) with countdowns
   spread evenly over 1-2 hours; kafkajobs:// then flushes its producer;
4. right after, publishes two tasks with countdown 2 s (held by the worker on both
   brokers: below the threshold), one with countdown 15 s (through a delay tier on
   kafkajobs://) and one plain task, and notes when they ran;
5. keeps sampling ``--after`` seconds (30); on Redis until the worker has taken the
   whole queue too (``LLEN`` 0), at most ``--drain-limit`` seconds more;
6. reads, from outside, the queue topic's committed offsets (the worker's group,
   ``celery``) against its end offsets and the records waiting in the delay tiers
   (confluent_kafka), or the Redis queue's length and unacked-hash size.

If publishing N is projected past ``--publish-budget`` (300 s), from the rate over the
second half of what was published so far once 50,000 are out, it is cut to
``--fallback-tasks`` (250,000); publishing also stops when the worker's RSS passes
``--rss-limit-mib`` (8 GiB) or ``--publish-limit`` (600 s) passes; the report says
so. None of the N tasks may run during the run (they are due in an hour or more).
Every loop is bounded in count and time; only processes started here are stopped,
by PID.

With ``--out``, the report goes to RESULTS.md under "Celery eta tasks: worker memory
(bench/celery_eta_memory.py)", one block per ``--broker`` and a side-by-side summary
(`bench.common.record_side_by_side`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kombu.pools
from celery import Celery  # type: ignore[import-untyped]
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)
from bench import common
from bench.celery_brokers import bridge_state, flush_kafkajobs, kafka_url, redis_server
from bench.celery_eta_memory_app import TASK_NAME
from bench.delayed_memory import (
    BASELINE_SAMPLES,
    COUNTDOWN_MIN,
    COUNTDOWN_SPAN,
    Sample,
    Sampler,
    countdown,
    log_levels,
    log_tail,
    mib,
    read_marks,
    signed_mib,
    status_kib,
    wait_for_marks,
)
from celery_bridge.options import BridgeOptions

NAME = "celery_eta_memory"  # the key of the RESULTS.md blocks
SECTION = "## Celery eta tasks: worker memory (bench/celery_eta_memory.py)"
APP_MODULE = "bench.celery_eta_memory_app"
KAFKAJOBS, REDIS = "kafkajobs", "redis"
SIDES = (KAFKAJOBS, REDIS)
SIDE_NAMES = {KAFKAJOBS: "kafkajobs://", REDIS: "redis://"}
SHORT = (("short-2s-a", 2.0), ("short-2s-b", 2.0), ("tier-15s", 15.0), ("plain", 0.0))
CHECK_EVERY = 1024  # publish iterations between clock / RSS checks
PROJECT_AFTER = 50_000  # tasks published before the publish time is projected
PROGRESS_EVERY = 50_000
MIB = 1024.0
DEFAULTS = BridgeOptions()  # the bridge's defaults: the worker runs on the bare URL


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Publish:
    asked: int
    done: int = 0
    loop: float = 0.0  # seconds in the send_task calls
    total: float = 0.0  # including the flush (kafkajobs)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.done / self.total if self.total > 0 else None


@dataclass
class Short:
    mark: str
    countdown: float
    due: float  # unix time
    ran: float | None = None

    @property
    def lateness(self) -> float | None:
        return None if self.ran is None else self.ran - self.due


@dataclass
class Side:
    side: str
    url: str
    queue: str = ""
    publish: Publish = field(default_factory=lambda: Publish(0))
    samples: list[Sample] = field(default_factory=list)
    baseline_kib: float | None = None
    hwm_end_kib: int | None = None
    broker_before_kib: int | None = None
    broker_after_kib: int | None = None
    startup: float | None = None
    short: list[Short] = field(default_factory=list)
    after: float = 0.0  # seconds sampled after the publish
    backlog: list[tuple[str, str]] = field(default_factory=list)  # (what, value) read at the end
    committed: int | None = None  # kafkajobs: the queue's committed offsets (sum)
    end: int | None = None  # kafkajobs: its end offsets (sum)
    lag: int | None = None  # kafkajobs: end minus committed, per partition (>= 0), summed
    early_runs: int = 0
    worker_exit: int | None = None
    log_counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return SIDE_NAMES[self.side]

    def worker_kib(self) -> list[int]:
        return [s.worker_kib for s in self.samples if s.worker_kib is not None]

    @property
    def peak_kib(self) -> int | None:
        values = self.worker_kib()
        return max(values) if values else None

    @property
    def final_kib(self) -> int | None:
        values = self.worker_kib()
        return values[-1] if values else None


def worker_env(url: str, queue: str, marks: Path) -> dict[str, str]:
    """The environment of the worker: no KAFKA_JOBS_* (the bridge at its defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_JOBS_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.update(ETA_MEMORY_BROKER=url, ETA_MEMORY_QUEUE=queue, ETA_MEMORY_MARKS=str(marks))
    return env


def publisher(url: str, queue: str) -> Celery:
    app = Celery("eta_memory", broker=url, set_as_current=False)
    app.conf.task_default_queue = queue
    if url.startswith("kafkajobs"):
        app.conf.broker_transport_options = {"kafka_config": {"logger": common.LIBRDKAFKA_LOG}}
    return app


def publish_far(app: Celery, side: Side, sampler: Sampler, args: argparse.Namespace) -> Publish:
    """Publish up to N eta tasks; cut to the fallback / stopped by the RSS and time limits."""
    result = Publish(asked=args.tasks)
    target = args.tasks
    started = time.monotonic()
    checkpoints = {0: started}  # tasks published -> when (every CHECK_EVERY)
    i = 0
    with app.producer_or_acquire() as producer:
        while i < target:
            if i % CHECK_EVERY == 0 and i:
                sampler.enqueued = i
                now = time.monotonic()
                checkpoints[i] = now
                elapsed = now - started
                # The rate over the second half so far: the brokers' start is slower.
                half = (i // 2) // CHECK_EVERY * CHECK_EVERY
                recent = (i - half) / max(now - checkpoints[half], 1e-9)
                projected = elapsed + (target - i) / recent
                if (
                    target > args.fallback_tasks
                    and i >= min(PROJECT_AFTER, args.fallback_tasks)
                    and projected > args.publish_budget
                ):
                    target = max(args.fallback_tasks, i)
                    note = (
                        f"publishing {args.tasks:,} tasks was projected to take {projected:.0f} s"
                        f" (> {args.publish_budget:.0f} s) after {i:,} in {elapsed:.0f} s: cut to"
                        f" {target:,} tasks"
                    )
                    result.notes.append(note)
                    common.progress(f"NOTE {side.name}: {note}")
                    if i >= target:
                        break
                latest = sampler.latest()
                rss = latest.worker_kib if latest else None
                if rss is not None and rss / MIB > args.rss_limit_mib:
                    note = (
                        f"publishing stopped at {i:,} tasks: the worker's RSS ({mib(rss)}) passed"
                        f" --rss-limit-mib {args.rss_limit_mib:.0f}"
                    )
                    result.notes.append(note)
                    common.progress(f"NOTE {side.name}: {note}")
                    break
                if elapsed > args.publish_limit:
                    note = f"publishing stopped at {i:,} tasks: {args.publish_limit:.0f} s passed"
                    result.notes.append(note)
                    common.progress(f"NOTE {side.name}: {note}")
                    break
            if i % PROGRESS_EVERY == 0 and i:
                elapsed = time.monotonic() - started
                latest = sampler.latest()
                common.progress(
                    f"{side.name}: published {i:,} / {target:,} in {elapsed:.1f} s"
                    f" ({i / elapsed:,.0f}/s); worker RSS"
                    f" {mib(latest.worker_kib if latest else None)}, broker RSS"
                    f" {mib(latest.broker_kib if latest else None)}"
                )
            app.send_task(TASK_NAME, ("d",), countdown=countdown(i), producer=producer)
            i += 1
    result.done = i
    sampler.enqueued = i
    result.loop = time.monotonic() - started
    if side.side == KAFKAJOBS:
        flush_kafkajobs(app, max(30.0, args.publish_limit - result.loop))  # raises on a failure
    result.total = time.monotonic() - started
    common.progress(
        f"{side.name}: {i:,} eta tasks published in {result.total:.1f} s"
        f" ({result.done / max(result.total, 1e-9):,.0f}/s)"
    )
    return result


def publish_short(app: Celery, side: Side) -> None:
    """The tasks that must run on time after the N: their due time is their eta."""
    with app.producer_or_acquire() as producer:
        for mark, seconds in SHORT:
            now = datetime.now(UTC)
            eta = now + timedelta(seconds=seconds)
            app.send_task(TASK_NAME, (mark,), eta=eta if seconds else None, producer=producer)
            side.short.append(Short(mark, seconds, eta.timestamp()))
    if side.side == KAFKAJOBS:
        flush_kafkajobs(app, 30.0)


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0)


def redis_pid(url: str) -> int | None:
    try:
        return int(redis_client(url).info("server")["process_id"])
    except Exception:
        return None


def redis_queue_length(url: str, queue: str) -> int | None:
    try:
        return int(redis_client(url).llen(queue))
    except Exception:
        return None


def read_redis_backlog(side: Side) -> None:
    client = redis_client(side.url)
    length = int(client.llen(side.queue))
    unacked = int(client.hlen("unacked"))
    used = client.info("memory")
    side.backlog = [
        ("tasks left in the queue (LLEN)", f"{length:,}"),
        ("tasks delivered to the worker, unacked (HLEN unacked)", f"{unacked:,}"),
        ("redis used_memory", str(used.get("used_memory_human", "?"))),
    ]


def read_kafka_backlog(side: Side, bootstrap: str) -> None:
    """Committed vs end offsets of the queue topic (group `celery`), and the delay tiers."""
    prefix = DEFAULTS.delay_topic_prefix
    config = {"bootstrap.servers": bootstrap, "logger": common.LIBRDKAFKA_LOG}
    admin = AdminClient(config)
    topics = admin.list_topics(timeout=10).topics
    tiers = sorted(t for t in topics if t.startswith(prefix + ".") and t.endswith("s"))

    def offsets(topic: str, group: str) -> tuple[int, int, int]:
        """Committed and end offsets summed over the partitions, and the lag (>= 0 each)."""
        consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
        try:
            parts = [TopicPartition(topic, p) for p in sorted(topics[topic].partitions)]
            committed = [max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)]
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
            lag = sum(max(e - c, 0) for c, e in zip(committed, ends, strict=True))
            return sum(committed), sum(ends), lag
        finally:
            consumer.close()

    side.committed, side.end, side.lag = offsets(side.queue, DEFAULTS.group_id)
    side.backlog = [
        (
            f"queue topic `{side.queue}`: committed / end offsets, summed over its partitions"
            f" (group `{DEFAULTS.group_id}`)",
            f"{side.committed:,} / {side.end:,} (lag {side.lag:,})",
        )
    ]
    waiting = []
    dispatcher = f"{prefix}.dispatcher"
    for tier in tiers:
        _, end, lag = offsets(tier, dispatcher)
        if end:
            waiting.append(f"`{tier}` {lag:,} (end {end:,})")
    side.backlog.append(
        (
            f"records waiting in the delay tiers (end minus group `{dispatcher}`'s committed)",
            "; ".join(waiting) or "none",
        )
    )


def short_ran(side: Side, marks: Path) -> bool:
    ran = {m: t for m, t in read_marks(marks)}
    for short in side.short:
        short.ran = ran.get(short.mark)
    return all(s.ran is not None for s in side.short)


def measure(
    side: Side, bootstrap: str, broker_pid: int | None, args: argparse.Namespace, tmp: Path
) -> Side:
    side.queue = common.unique(f"bench-eta-{side.side}")
    marks, log_path = tmp / f"{side.side}-marks.txt", tmp / f"{side.side}-worker.log"
    command = [
        sys.executable,
        *("-m", "celery", "-A", APP_MODULE, "worker", "-P", "threads", "-c", "2"),
        *("--without-mingle", "--without-gossip", "-l", "WARNING"),
    ]
    app = publisher(side.url, side.queue)
    started = time.monotonic()
    worker = common.spawn(command, worker_env(side.url, side.queue, marks), log_path, common.ROOT)
    common.progress(f"{side.name}: worker pid {worker.pid}, queue {side.queue}, log {log_path}")
    sampler: Sampler | None = None
    try:
        app.send_task(TASK_NAME, ("ready",))
        if side.side == KAFKAJOBS:
            flush_kafkajobs(app, 30.0)
        if not wait_for_marks(marks, {"ready"}, args.startup_timeout, worker):
            raise RuntimeError(f"the worker ran no task within {args.startup_timeout:g} s")
        side.startup = time.monotonic() - started
        common.progress(f"{side.name}: worker up after {side.startup:.1f} s")

        sampler = Sampler(worker.pid, broker_pid).start()
        deadline = time.monotonic() + BASELINE_SAMPLES * 2 + 5
        while len(sampler.snapshot()) < BASELINE_SAMPLES and time.monotonic() < deadline:
            time.sleep(0.1)
        base = [s.worker_kib for s in sampler.snapshot() if s.worker_kib is not None]
        if not base:
            raise RuntimeError("cannot read the worker's RSS")
        side.baseline_kib = statistics.median(base)
        side.broker_before_kib = None if broker_pid is None else status_kib(broker_pid, "VmRSS")
        common.progress(
            f"{side.name}: baseline worker RSS {mib(side.baseline_kib)},"
            f" broker RSS {mib(side.broker_before_kib)}; publishing {args.tasks:,} ..."
        )

        sampler.phase = "publish"
        side.publish = publish_far(app, side, sampler, args)
        published = time.monotonic()
        sampler.phase = "after"
        publish_short(app, side)

        # Sample --after seconds; on Redis also until the worker took the whole queue.
        drained_at: float | None = None
        end_by = published + args.after + args.drain_limit
        while time.monotonic() < end_by:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
            now = time.monotonic()
            drained = side.side != REDIS or redis_queue_length(side.url, side.queue) == 0
            if drained and drained_at is None:
                drained_at = now
                if side.side == REDIS:
                    common.progress(
                        f"{side.name}: queue drained {now - published:.0f} s after the publish"
                    )
            if now >= published + args.after and drained and short_ran(side, marks):
                break
            latest = sampler.latest()
            if latest and latest.worker_kib and latest.worker_kib / MIB > args.rss_limit_mib * 1.5:
                side.errors.append(
                    f"the worker's RSS passed 1.5x --rss-limit-mib ({mib(latest.worker_kib)}):"
                    " stopped waiting"
                )
                break
            time.sleep(0.5)
        else:
            side.errors.append(
                f"not drained / short tasks not all run {args.after + args.drain_limit:.0f} s"
                " after the publish"
            )
        side.after = time.monotonic() - published
        short_ran(side, marks)
        sampler.take()
        side.hwm_end_kib = status_kib(worker.pid, "VmHWM")
        side.broker_after_kib = None if broker_pid is None else status_kib(broker_pid, "VmRSS")
        try:
            if side.side == KAFKAJOBS:
                read_kafka_backlog(side, bootstrap)
            else:
                read_redis_backlog(side)
        except Exception as exc:
            side.errors.append(f"reading the backlog: {exc!r}")
        side.early_runs = sum(1 for m, _ in read_marks(marks) if m == "d")
        for short in side.short:
            late = "did not run" if short.lateness is None else f"{short.lateness:+.3f} s"
            common.progress(f"{side.name}: {short.mark}: {late} vs its due time")
        for what, value in side.backlog:
            common.progress(f"{side.name}: {what}: {value}")
    except Exception as exc:
        side.errors.append(repr(exc))
        common.progress(f"{side.name} FAILED: {exc!r}\nworker log tail:\n{log_tail(log_path)}")
    finally:
        if sampler is not None:
            sampler.stop()
            side.samples = sampler.snapshot()
        side.worker_exit = common.stop_process(worker, 60.0)
        common.progress(f"{side.name}: worker stopped (exit code {side.worker_exit})")
        kombu.pools.reset()  # type: ignore[no-untyped-call]
        app.close()
        side.log_counts = log_levels(log_path)
    return side


# --- report ----------------------------------------------------------------------------------


def growth(side: Side, kib: int | None) -> str:
    if kib is None or side.baseline_kib is None:
        return "n/a"
    return signed_mib(kib - side.baseline_kib)


def per_task(side: Side) -> str:
    if side.peak_kib is None or side.baseline_kib is None or not side.publish.done:
        return "n/a"
    return f"{(side.peak_kib - side.baseline_kib) * 1024 / side.publish.done:,.0f} bytes"


def lateness(side: Side) -> str:
    return "; ".join(
        f"{s.mark} {'did not run' if s.lateness is None else f'{s.lateness:+.2f} s'}"
        for s in side.short
    )


def published_text(side: Side) -> str:
    p = side.publish
    text = f"{p.done:,}"
    if p.done != p.asked:
        text += f" (asked {p.asked:,})"
    return text


def rate_text(side: Side) -> str:
    p = side.publish
    if p.rate is None:
        return "n/a"
    return f"{p.rate:,.0f}/s ({p.done:,} in {p.total:.1f} s incl. flush, calls {p.loop:.1f} s)"


def rows(sides: list[Side]) -> list[list[str]]:
    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(s) for s in sides)]

    out = [
        row("eta tasks published (countdown 1-2 h)", published_text),
        row("publish rate", rate_text),
        row("worker RSS before (median of 5 samples)", lambda s: mib(s.baseline_kib)),
        row(
            "worker RSS peak (1 s samples)",
            lambda s: f"{mib(s.peak_kib)} ({growth(s, s.peak_kib)})",
        ),
        row(
            "worker RSS at the end",
            lambda s: (
                f"{mib(s.final_kib)} ({growth(s, s.final_kib)}), {s.after:.0f} s after the publish"
            ),
        ),
        row("worker RSS growth (peak) per eta task", per_task),
        row("worker VmHWM at the end", lambda s: mib(s.hwm_end_kib)),
        row(
            "broker RSS before / after (Kafka broker, redis-server)",
            lambda s: f"{mib(s.broker_before_kib)} / {mib(s.broker_after_kib)}",
        ),
    ]
    labels: list[str] = []
    for side in sides:
        labels += [what for what, _ in side.backlog if what not in labels]
    for label in labels:
        out.append(row(label, lambda s, k=label: dict(s.backlog).get(k, "-")))
    out += [
        row("tasks after the N: lateness vs due (2 s, 2 s, 15 s, plain)", lateness),
        row("eta tasks that ran during the run (must be 0)", lambda s: str(s.early_runs)),
        row("worker up after (a plain task ran)", lambda s: f"{s.startup or 0:.1f} s"),
        row(
            "worker log: WARNING / ERROR / Traceback lines",
            lambda s: "/".join(
                str(s.log_counts.get(k, 0)) for k in ("WARNING", "ERROR", "Traceback")
            ),
        ),
        row("worker exit code on SIGTERM (None: killed after 60 s)", lambda s: str(s.worker_exit)),
    ]
    return out


def condensed(samples: list[Sample], every: float) -> list[Sample]:
    """About one sample every `every` s, plus the peak and the last."""
    if not samples:
        return []
    peak = max(samples, key=lambda s: s.worker_kib or 0)
    kept, next_t = [], 0.0
    for s in samples:
        if s.t >= next_t or s is peak or s is samples[-1]:
            kept.append(s)
            next_t = s.t + every - 0.5
    return kept


def section_text(
    invocation: common.Invocation,
    load_average: str,
    kafka: common.BrokerHandle,
    redis_description: str,
    bridge: str,
    args: argparse.Namespace,
    sides: list[Side],
) -> str:
    out = [
        f"### On {kafka.name}",
        "",
        *common.report_head(invocation.command, invocation.date, load_average),
        f"- celery_bridge source: {bridge}",
        f"- Kafka broker: {kafka.description}",
        f"- Redis: {redis_description}",
        f"- worker: `celery -A {APP_MODULE} worker -P threads -c 2 --without-mingle"
        " --without-gossip`, Celery defaults otherwise (prefetch multiplier 4, early acks);"
        f" kafkajobs:// is the bare URL (eta_threshold {DEFAULTS.eta_threshold:g} s,"
        f" group `{DEFAULTS.group_id}`)",
        f"- tasks: {args.tasks:,} asked, countdowns spread evenly over"
        f" {COUNTDOWN_MIN / 3600:.0f}-{(COUNTDOWN_MIN + COUNTDOWN_SPAN) / 3600:.0f} h;"
        f" bounds: publish budget {args.publish_budget:.0f} s (then {args.fallback_tasks:,}),"
        f" hard limit {args.publish_limit:.0f} s, worker RSS limit {args.rss_limit_mib:,.0f} MiB",
        "",
        common.markdown_table(["", *(s.name for s in sides)], rows(sides)),
        "",
    ]
    for side in sides:
        out += [f"Worker RSS on {side.name} (about one sample every 10 s):", ""]
        table = [
            [f"{s.t:.0f}", s.phase, f"{s.enqueued:,}", mib(s.worker_kib), mib(s.broker_kib)]
            for s in condensed(side.samples, 10.0)
        ]
        out += [
            common.markdown_table(
                ["t (s)", "phase", "published", "worker RSS", "broker RSS"], table
            ),
            "",
        ]
    notes = [
        "RSS is VmRSS of /proc/PID/status read every second by a thread of the benchmark"
        " process (`bench.delayed_memory.Sampler`); the celery worker with `-P threads` is one"
        " process. VmHWM is the kernel's peak RSS (start-up included).",
        "kafkajobs://: a task whose eta is more than eta_threshold ahead is written to a delay"
        " tier topic at publish time; the worker's delay dispatcher moves it to the queue topic"
        " when due. The 15 s task takes that path; the 2 s ones go to the queue and are held by"
        " the worker until their eta, as on Redis.",
        "redis://: the worker takes every eta task from the list at once (Celery raises its"
        " prefetch for each) and holds it in memory, unacked, until its eta (kombu keeps a copy"
        " in the `unacked` hash). Tasks published after the N wait in the list behind those the"
        " worker has not taken yet. Redis's visibility_timeout (1 h by default) is shorter than"
        " these countdowns: left running, the tasks would be delivered again after an hour.",
        "queue lag is the sum over partitions of max(end - committed, 0); the embedded broker"
        " (Tansu) reports end offsets per batch of records, so there its committed offset can"
        " be above the end offset it reports.",
        "the machine's 2 CPUs are shared by the Kafka broker, redis-server, the publishing"
        " benchmark process and the worker.",
    ]
    for side in sides:
        notes += [f"{side.name}: {note}" for note in side.publish.notes]
        notes += [f"{side.name} error: {error}" for error in side.errors]
    out += common.notes_list(notes)
    return "\n".join(out)


def summary_cells(sides: list[Side], invocation: common.Invocation) -> list[list[str]]:
    cells = [["date", invocation.date], ["kafka-jobs source", common.source_state()]]
    for side in sides:
        cells += [
            [f"{side.name} eta tasks published", published_text(side)],
            [
                f"{side.name} publish rate",
                "n/a" if side.publish.rate is None else f"{side.publish.rate:,.0f}/s",
            ],
            [
                f"{side.name} worker RSS before / peak / end",
                f"{mib(side.baseline_kib)} / {mib(side.peak_kib)} / {mib(side.final_kib)}",
            ],
            [f"{side.name} worker RSS growth per eta task (peak)", per_task(side)],
        ]
        if side.side == KAFKAJOBS:
            cells.append(
                [
                    f"{side.name} queue lag (end - committed offsets)",
                    "n/a" if side.lag is None else f"{side.lag:,}",
                ]
            )
        cells.append([f"{side.name} short tasks lateness", lateness(side)])
    return cells


def ensure_section(path: Path) -> None:
    """The section and its (empty) blocks, before "Earlier runs", if the file lacks them."""
    common.ensure_section(
        path,
        SECTION,
        NAME,
        "Worker memory of one Celery worker with a million tasks scheduled an hour or two"
        " ahead (`countdown`), on kafkajobs:// (far etas wait in the kafka-jobs delay tiers,"
        " issue 19) and on Redis (the worker holds every eta task); see the docstring of"
        " `bench/celery_eta_memory.py`.\n\n"
        "```\n"
        "python -m bench.celery_eta_memory --broker embedded --out bench/RESULTS.md\n"
        "python -m bench.celery_eta_memory --broker apache --out bench/RESULTS.md\n"
        "```\n\n",
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.arg_parser(f"bench.{NAME}", __doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="eta tasks per side")
    parser.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated subset of kafkajobs,redis"
    )
    common.add_out_argument(parser, appends=False)
    common.add_options(
        parser,
        ("--after", 30.0, "seconds of sampling after the publish"),
        ("--drain-limit", 240.0, "redis: seconds more, at most, for the worker to take the queue"),
        ("--publish-budget", 300.0, "projected publish seconds above which --fallback-tasks"),
        ("--fallback-tasks", 250_000, None),
        ("--publish-limit", 600.0, "hard limit of the publish (seconds)"),
        ("--rss-limit-mib", 8192.0, "publishing stops when the worker's RSS passes this"),
        ("--startup-timeout", 90.0, "seconds for the worker to run its first task"),
    )
    args = parser.parse_args(argv)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.sides or any(s not in SIDES for s in args.sides):
        parser.error(f"--sides: choose from {','.join(SIDES)}")
    if args.tasks < 1 or args.fallback_tasks < 1 or args.after < 20:
        parser.error("--tasks and --fallback-tasks must be positive, --after at least 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin(f"bench.{NAME}")
    bridge = bridge_state()
    sides: list[Side] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-eta-memory-"))  # logs and marks, kept
    common.progress(f"worker logs in {workdir}")
    with (
        common.broker(args.broker) as kafka,
        redis_server(None, workdir, REDIS in args.sides) as redis_handle,
    ):
        common.progress(f"Kafka broker: {kafka.description} at {kafka.bootstrap}")
        common.progress(f"Redis: {redis_handle.description}")
        for name in args.sides:
            if name == KAFKAJOBS:
                side = Side(KAFKAJOBS, kafka_url("kafkajobs", kafka.bootstrap))
                sides.append(measure(side, kafka.bootstrap, kafka.pid, args, workdir))
            else:
                side = Side(REDIS, redis_handle.url)
                pid = redis_pid(redis_handle.url)
                sides.append(measure(side, kafka.bootstrap, pid, args, workdir))
    load_average = invocation.load_average()
    print()
    print(f"Kafka broker: {kafka.description}")
    print(common.text_table(["", *(s.name for s in sides)], rows(sides)))
    text = section_text(
        invocation, load_average, kafka, redis_handle.description, bridge, args, sides
    )
    if str(args.out) != "-":
        ensure_section(args.out)
    common.record_side_by_side(
        args.out, NAME, kafka.kind, kafka.name, text, summary_cells(sides, invocation)
    )
    ok = all(not s.errors and s.early_runs == 0 for s in sides)
    kj = next((s for s in sides if s.side == KAFKAJOBS), None)
    if kj is not None and (kj.lag is None or kj.lag > 100):
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
