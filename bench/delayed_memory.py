"""Worker memory with a million delayed jobs waiting (the claim of `kafka_jobs.delay.tiers`).

    python -m bench.delayed_memory [--broker embedded|apache] [--jobs N] [--out bench/RESULTS.md]

Uses `KAFKA_BOOTSTRAP_SERVERS` when set, else starts the broker of `--broker` (default
embedded: Tansu, `kafka_jobs.broker.EmbeddedBroker`; apache: one Apache Kafka KRaft node,
`kafka_jobs.apache.ApacheKafkaCluster`) and stops it at the end. Then:

1. starts ONE worker subprocess, `python -m kafka_jobs worker -A bench.delayed_memory_app`,
   on a new topic, with its own consumer group and delay-topic prefix;
2. waits until it is up: a plain job and a job with countdown 1 s (which passes
   through the delay dispatcher) both ran;
3. samples the worker's RSS (`/proc/PID/status` VmRSS) every second from here
   to the end, and the broker's when this run started it (Tansu or the Kafka JVM);
4. enqueues N jobs (`apply_async(("d",), countdown=...)`) with countdowns spread
   evenly over 1-2 hours, i.e. into the 1024 s and 4096 s tiers, from this
   process, then flushes;
5. right after the flush, enqueues 3 jobs with countdown 2 s and one plain job,
   and measures when they ran (lateness = run time minus due time);
6. keeps sampling for `--after` seconds (30) after the flush.

Every execution appends a line to a marks file; the N delayed jobs, due in an
hour or more, must not run at all during the benchmark.

If the enqueue is projected to take longer than `--enqueue-budget` (300 s) it is
cut to `--fallback-jobs` (300,000), and the report says so. Every loop is bounded
in count and time; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.delayed_memory_app import TASK_NAME
from kafka_jobs.app import App
from kafka_jobs.delay.tiers import TIERS, next_hop
from kafka_jobs.settings import Settings
from kafka_jobs.task import Task

SECTION = "## Delayed jobs: worker memory (bench/delayed_memory.py)"
APP_MODULE = "bench.delayed_memory_app"
COUNTDOWN_MIN = 3600.0  # seconds; countdowns spread over [1 h, 2 h)
COUNTDOWN_SPAN = 3600.0
GOLDEN = 0.6180339887498949  # i * GOLDEN mod 1: an even spread whatever N is
SHORT_JOBS = 3
SHORT_COUNTDOWN = 2.0
LATE_LIMIT = 5.0  # seconds: a short job later than this counts as held up
BASELINE_SAMPLES = 5
MAX_SAMPLES = 7200  # the sampler's own bound (two hours at 1/s)
CHECK_EVERY = 1024  # enqueue iterations between clock checks
PROGRESS_EVERY = 100_000
MIB = 1024.0
SKIPPED_MACHINE_ROWS = ("celery / kombu", "kafka-jobs source")  # not used here / read at start


# --- /proc -----------------------------------------------------------------------------------


def status_kib(pid: int, field_name: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / MIB:,.1f} MiB"


def signed_mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / MIB:+,.1f} MiB"


@dataclass
class Sample:
    """One reading of both processes."""

    t: float  # seconds since the sampler started
    phase: str
    enqueued: int
    worker_kib: int | None
    broker_kib: int | None


class Sampler:
    """A thread reading the worker's (and broker's) RSS every `interval` seconds, bounded."""

    def __init__(self, worker_pid: int, broker_pid: int | None, interval: float = 1.0) -> None:
        self.worker_pid = worker_pid
        self.broker_pid = broker_pid
        self.interval = interval
        self.phase = "baseline"
        self.enqueued = 0
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def take(self) -> Sample:
        sample = Sample(
            t=time.monotonic() - self._started,
            phase=self.phase,
            enqueued=self.enqueued,
            worker_kib=status_kib(self.worker_pid, "VmRSS"),
            broker_kib=None if self.broker_pid is None else status_kib(self.broker_pid, "VmRSS"),
        )
        with self._lock:
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(sample)
        return sample

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def latest(self) -> Sample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        for _ in range(MAX_SAMPLES):
            self.take()
            if self._stop.wait(self.interval):
                return


# --- processes -------------------------------------------------------------------------------


def start_worker(
    bootstrap: str, topic: str, group: str, prefix: str, marks: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    env = common.worker_env(bootstrap)
    env["KAFKA_JOBS_DELAY_TOPIC_PREFIX"] = prefix
    env["DELAYED_MEMORY_TOPIC"] = topic
    env["DELAYED_MEMORY_MARKS"] = str(marks)
    command = [sys.executable, "-m", "kafka_jobs", "worker", "-A", APP_MODULE, "--group", group]
    return common.spawn(command, env, log_path, cwd=common.ROOT)


def read_marks(path: Path) -> list[tuple[str, float]]:
    """(mark, unix time) of every execution so far."""
    if not path.exists():
        return []
    marks = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            marks.append((parts[0], float(parts[1])))
    return marks


def ran_at(path: Path, mark: str) -> float | None:
    return next((t for m, t in read_marks(path) if m == mark), None)


def wait_for_marks(
    path: Path, wanted: set[str], timeout: float, worker: subprocess.Popen[bytes]
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {m for m, _ in read_marks(path)}:
            return True
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}")
        time.sleep(0.05)
    return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def log_levels(path: Path) -> dict[str, int]:
    """WARNING / ERROR / CRITICAL lines and tracebacks in the worker's log."""
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return counts
    for line in text.splitlines():
        for word in counts:
            if f" {word} " in line or line.startswith(word):
                counts[word] += 1
    return counts


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Enqueue:
    asked: int
    done: int = 0
    loop: float = 0.0  # seconds in the enqueue calls
    total: float = 0.0  # including the final flush
    note: str | None = None


@dataclass
class ShortJob:
    mark: str
    due: float  # unix time
    ran: float | None = None

    @property
    def lateness(self) -> float | None:
        return None if self.ran is None else self.ran - self.due


@dataclass
class Run:
    jobs: Enqueue
    samples: list[Sample] = field(default_factory=list)
    baseline_kib: float | None = None
    baseline_samples: list[int] = field(default_factory=list)
    worker_hwm_start_kib: int | None = None
    worker_hwm_end_kib: int | None = None
    broker_before_kib: int | None = None
    broker_after_kib: int | None = None
    startup: float | None = None
    short: list[ShortJob] = field(default_factory=list)
    plain_after: float | None = None  # seconds from enqueue to run of a plain job after the N
    early_runs: int = 0
    worker_exit: int | None = None
    worker_alive_at_end: bool = False
    log_counts: dict[str, int] = field(default_factory=dict)
    tiers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    after: float = 30.0


def make_app(bootstrap: str, topic: str, prefix: str) -> App:
    env = Settings.from_env()
    return App(
        Settings(
            bootstrap_servers=bootstrap,
            default_topic=topic,
            delay_topic_prefix=prefix,
            kafka_config={**env.kafka_config, "logger": common.LIBRDKAFKA_LOG},
            producer_config=env.producer_config,
        )
    )


def countdown(i: int) -> float:
    return COUNTDOWN_MIN + COUNTDOWN_SPAN * ((i * GOLDEN) % 1.0)


def enqueue_delayed(task: Task[Any, Any], sampler: Sampler, args: argparse.Namespace) -> Enqueue:
    """Enqueue up to N delayed jobs; cut to the fallback if projected past the budget."""
    result = Enqueue(asked=args.jobs)
    target = args.jobs
    started = time.monotonic()
    i = 0
    while i < target:
        if i % CHECK_EVERY == 0 and i:
            sampler.enqueued = i
            elapsed = time.monotonic() - started
            projected = elapsed / i * target
            if (
                target > args.fallback_jobs
                and i >= min(20_000, args.fallback_jobs)
                and projected > args.enqueue_budget
            ):
                new_target = max(args.fallback_jobs, i)
                result.note = (
                    f"the enqueue of {target:,} jobs was projected to take {projected:.0f} s"
                    f" (> {args.enqueue_budget:.0f} s) after {i:,} jobs in {elapsed:.0f} s:"
                    f" cut to {new_target:,} jobs"
                )
                common.progress(f"NOTE: {result.note}")
                target = new_target
                if i >= target:
                    break
            if elapsed > args.enqueue_limit:
                result.note = (
                    f"enqueue stopped at {i:,} jobs: the hard limit of {args.enqueue_limit:.0f} s"
                    " passed"
                )
                common.progress(f"NOTE: {result.note}")
                break
        if i % PROGRESS_EVERY == 0 and i:
            elapsed = time.monotonic() - started
            latest = sampler.latest()
            common.progress(
                f"enqueued {i:,} / {target:,} in {elapsed:.1f} s ({i / elapsed:,.0f}/s);"
                f" worker RSS {mib(latest.worker_kib if latest else None)},"
                f" broker RSS {mib(latest.broker_kib if latest else None)}"
            )
        task.apply_async(("d",), countdown=countdown(i))
        i += 1
    result.done = i
    sampler.enqueued = i
    result.loop = time.monotonic() - started
    common.progress(f"enqueued {i:,} calls in {result.loop:.1f} s; flushing ...")
    task.app.flush(max(30.0, args.enqueue_limit - result.loop))  # raises on a failed delivery
    result.total = time.monotonic() - started
    common.progress(
        f"flushed: {i:,} delayed jobs acknowledged {result.total:.1f} s after the first"
    )
    return result


def tiers_used() -> list[str]:
    """The tiers the countdown range lands in at enqueue."""
    used = set()
    for seconds in (COUNTDOWN_MIN, COUNTDOWN_MIN + COUNTDOWN_SPAN - 1):
        hop = next_hop(0, int(seconds * 1000))
        if hop is not None:
            used.add(hop[0])
    return [f"{s} s" for s in TIERS if s in used]


def measure(bootstrap: str, broker_pid: int | None, args: argparse.Namespace, tmp: Path) -> Run:
    run = Run(jobs=Enqueue(asked=args.jobs), after=args.after, tiers=tiers_used())
    tag = uuid.uuid4().hex[:10]
    topic = common.create_topic(bootstrap, "bench-delayed-mem", 1)
    group, prefix = f"bench-delayed-mem-g-{tag}", f"bench-delayed-mem-{tag}.delay"
    marks, log_path = tmp / "marks.txt", tmp / "worker.log"
    app = make_app(bootstrap, topic, prefix)
    task = app.job(name=TASK_NAME)(_noop)
    run.broker_before_kib = None if broker_pid is None else status_kib(broker_pid, "VmRSS")
    started = time.monotonic()
    worker = start_worker(bootstrap, topic, group, prefix, marks, log_path)
    common.progress(f"worker started: pid {worker.pid}, topic {topic}, delay prefix {prefix}")
    sampler: Sampler | None = None
    try:
        # Up: a plain job ran (listener) and a 1 s delayed one did (dispatcher and its tiers).
        task.apply_async(("ready",)).wait(30)
        task.apply_async(("ready-delayed",), countdown=1.0).wait(30)
        if not wait_for_marks(marks, {"ready", "ready-delayed"}, args.startup_timeout, worker):
            raise RuntimeError(
                f"the worker did not run the readiness jobs within {args.startup_timeout:g} s"
            )
        run.startup = time.monotonic() - started
        common.progress(f"worker up after {run.startup:.1f} s (plain and 1 s delayed job ran)")
        run.worker_hwm_start_kib = status_kib(worker.pid, "VmHWM")

        sampler = Sampler(worker.pid, broker_pid).start()
        deadline = time.monotonic() + BASELINE_SAMPLES * 2 + 5
        while len(sampler.snapshot()) < BASELINE_SAMPLES and time.monotonic() < deadline:
            time.sleep(0.1)
        base = [s.worker_kib for s in sampler.snapshot() if s.worker_kib is not None]
        if not base:
            raise RuntimeError("cannot read the worker's RSS")
        run.baseline_samples = base
        run.baseline_kib = statistics.median(base)
        if broker_pid is not None:
            run.broker_before_kib = status_kib(broker_pid, "VmRSS")
        common.progress(
            f"baseline: worker RSS {mib(run.baseline_kib)} (median of {len(base)} samples),"
            f" broker RSS {mib(run.broker_before_kib)}"
        )

        sampler.phase = "enqueue"
        common.progress(f"enqueueing {args.jobs:,} jobs, countdown 1-2 h (tiers {run.tiers}) ...")
        run.jobs = enqueue_delayed(task, sampler, args)
        flushed = time.monotonic()
        sampler.phase = "after"

        # After the N: short-countdown jobs and one plain job must not wait behind them.
        for k in range(SHORT_JOBS):
            handle = task.apply_async((f"short-{k}",), countdown=SHORT_COUNTDOWN)
            run.short.append(ShortJob(f"short-{k}", (handle.eta_ms or 0) / 1000))
        plain_sent = time.time()
        task.apply_async(("plain-after",))
        app.flush(30)
        wanted = {s.mark for s in run.short} | {"plain-after"}
        wait_for_marks(marks, wanted, SHORT_COUNTDOWN + 60, worker)
        for short in run.short:
            short.ran = ran_at(marks, short.mark)
            late = "did not run" if short.lateness is None else f"{short.lateness:+.3f} s"
            common.progress(f"{short.mark}: ran {late} relative to its due time")
        plain = ran_at(marks, "plain-after")
        run.plain_after = None if plain is None else plain - plain_sent

        while time.monotonic() < flushed + args.after:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
            time.sleep(0.2)
        sampler.take()
        sampler.stop()
        run.worker_hwm_end_kib = status_kib(worker.pid, "VmHWM")
        if broker_pid is not None:
            run.broker_after_kib = status_kib(broker_pid, "VmRSS")
        run.early_runs = sum(1 for m, _ in read_marks(marks) if m == "d")
        run.worker_alive_at_end = worker.poll() is None
    except Exception as exc:
        run.errors.append(repr(exc))
        common.progress(f"FAILED: {exc!r}\nworker log tail:\n{log_tail(log_path)}")
    finally:
        if sampler is not None:
            sampler.stop()
            run.samples = sampler.snapshot()
        run.worker_exit = common.stop_process(worker, 60.0)
        common.progress(f"worker stopped (exit code {run.worker_exit})")
        try:
            app.producer.close(5)
        except Exception as exc:
            run.errors.append(f"closing the producer: {exc!r}")
        run.log_counts = log_levels(log_path)
        if any(run.log_counts.values()):
            common.progress(f"worker log ({run.log_counts}), tail:\n{log_tail(log_path)}")
    return run


def _noop(mark: str) -> None:
    raise AssertionError("runs in the worker process only")


# --- report ----------------------------------------------------------------------------------


def worker_values(samples: list[Sample], phases: tuple[str, ...]) -> list[int]:
    return [s.worker_kib for s in samples if s.phase in phases and s.worker_kib is not None]


def summary(run: Run) -> dict[str, Any]:
    all_worker = worker_values(run.samples, ("baseline", "enqueue", "after"))
    peak = max(all_worker) if all_worker else None
    final = all_worker[-1] if all_worker else None
    base = run.baseline_kib
    growth_peak = None if peak is None or base is None else peak - base
    growth_final = None if final is None or base is None else final - base
    per_job = (
        None if growth_final is None or not run.jobs.done else growth_final * 1024 / run.jobs.done
    )
    broker_values = [s.broker_kib for s in run.samples if s.broker_kib is not None]
    during = [s for s in run.samples if s.phase == "enqueue" and s.worker_kib is not None]
    return {
        "first_during": during[0] if during else None,
        "last_during": during[-1] if during else None,
        "peak": peak,
        "final": final,
        "growth_peak": growth_peak,
        "growth_final": growth_final,
        "per_job": per_job,
        "broker_peak": max(broker_values) if broker_values else None,
    }


def verdict(run: Run, figures: dict[str, Any], limit_mib: float) -> str:
    growth = figures["growth_peak"]
    if growth is None:
        return "no verdict: the worker's RSS was not sampled"
    if growth / MIB <= limit_mib:
        return (
            f"bounded: the worker's peak RSS stayed within {limit_mib:.0f} MiB of its baseline"
            f" ({signed_mib(growth)}) with {run.jobs.done:,} delayed jobs waiting"
        )
    return (
        f"NOT bounded by this test's limit: the worker's peak RSS rose {signed_mib(growth)}"
        f" above its baseline (limit {limit_mib:.0f} MiB) with {run.jobs.done:,} jobs"
    )


def condensed(samples: list[Sample], every: float = 5.0) -> list[Sample]:
    """Every sample of the enqueue, else about one every `every` s, plus the last and the peak."""
    if not samples:
        return []
    peak = max(samples, key=lambda s: s.worker_kib or 0)
    kept: list[Sample] = []
    next_t = 0.0
    for sample in samples:
        if (
            sample.t >= next_t
            or sample.phase == "enqueue"
            or sample is peak
            or sample is samples[-1]
        ):
            kept.append(sample)
            next_t = sample.t + every - 0.5
    return kept


def section(
    command: str,
    date: str,
    commit: str,
    broker_description: str,
    load_average: str,
    args: argparse.Namespace,
    run: Run,
) -> str:
    figures = summary(run)
    jobs = run.jobs
    rate = f"{jobs.done / jobs.total:,.0f}/s" if jobs.total > 0 else "n/a"
    short_lines = [
        f"{s.mark}: due {time.strftime('%H:%M:%S', time.gmtime(s.due))}"
        f".{int(s.due * 1000) % 1000:03d} UTC, "
        + ("did not run" if s.lateness is None else f"ran {s.lateness:+.3f} s after its due time")
        for s in run.short
    ]
    hwm = (
        f"{mib(run.worker_hwm_start_kib)} when it was up, {mib(run.worker_hwm_end_kib)} at the end"
    )
    rows = [
        [
            "delayed jobs enqueued",
            f"{jobs.done:,}" + (f" (asked {jobs.asked:,})" if jobs.note else ""),
        ],
        [
            "enqueue time",
            f"{jobs.total:.1f} s incl. flush = {rate} (calls {jobs.loop:.1f} s)",
        ],
        ["worker RSS baseline (median of the samples before the enqueue)", mib(run.baseline_kib)],
        ["worker RSS peak (1 s samples, baseline to end)", mib(figures["peak"])],
        [f"worker RSS final ({run.after:.0f} s after the flush)", mib(figures["final"])],
        [
            "worker RSS growth: peak / final vs baseline",
            (f"{signed_mib(figures['growth_peak'])} / {signed_mib(figures['growth_final'])}"),
        ],
        [
            "worker RSS growth (final) divided by the number of delayed jobs",
            "n/a" if figures["per_job"] is None else f"{figures['per_job']:+.2f} bytes",
        ],
        ["worker RSS early in the enqueue / at its end (does it scale with N?)", scaling(figures)],
        ["worker VmHWM (kernel peak RSS)", hwm],
        ["broker RSS before / after (holds the records)", broker_growth(run)],
        ["broker RSS peak", mib(figures["broker_peak"])],
        [
            f"{SHORT_JOBS} jobs with countdown {SHORT_COUNTDOWN:g} s enqueued after the flush",
            "; ".join(
                "did not run" if s.lateness is None else f"{s.lateness:+.3f} s" for s in run.short
            )
            + " late",
        ],
        [
            "plain job enqueued after them: enqueue to run",
            "did not run" if run.plain_after is None else f"{run.plain_after:.3f} s",
        ],
        [
            "delayed jobs that ran during the benchmark (due in 1-2 h: must be 0)",
            str(run.early_runs),
        ],
        [
            "worker up after (plain + 1 s delayed job ran)",
            ("n/a" if run.startup is None else f"{run.startup:.1f} s"),
        ],
        [
            "worker log: WARNING / ERROR / Traceback lines",
            (
                f"{run.log_counts.get('WARNING', 0)} / {run.log_counts.get('ERROR', 0)}"
                f" / {run.log_counts.get('Traceback', 0)}"
            ),
        ],
        ["worker exit code on SIGTERM", str(run.worker_exit)],
    ]
    sample_rows = [
        [
            f"{s.t:.0f}",
            s.phase,
            f"{s.enqueued:,}",
            mib(s.worker_kib),
            mib(s.broker_kib),
        ]
        for s in condensed(run.samples)
    ]
    out = [
        SECTION,
        "",
        "One worker process (`python -m kafka_jobs worker -A bench.delayed_memory_app`,"
        " concurrency 4) and N jobs enqueued from the benchmark process with countdowns spread"
        f" evenly over 1-2 hours (they land in the {' and '.join(run.tiers)} delay tiers); see"
        " the docstring of `bench/delayed_memory.py` for the steps.",
        "",
        *common.report_head(command, date, load_average, skip=SKIPPED_MACHINE_ROWS),
        f"- commit at start: {commit}",
        f"- broker: {broker_description}",
        f"- jobs: {jobs.done:,} delayed" + (f" ({jobs.note})" if jobs.note else ""),
        "",
        "### Figures",
        "",
        common.markdown_table(["", "value"], rows),
        "",
        f"Verdict: {verdict(run, figures, args.bounded_mib)}; {short_verdict(run)}.",
        "",
        "Short jobs:",
        "",
        *(f"- {line}" for line in short_lines),
        "",
        "### RSS samples (every one during the enqueue, else about one every 5 s)",
        "",
        common.markdown_table(
            ["t (s)", "phase", "enqueued", "worker RSS", "broker RSS"], sample_rows
        ),
        "",
        "Notes:",
        "",
        *(f"- {note}" for note in notes(run, args)),
        "",
    ]
    return "\n".join(out)


def scaling(figures: dict[str, Any]) -> str:
    first, last = figures["first_during"], figures["last_during"]
    if first is None or last is None:
        return "n/a (the enqueue was shorter than one sample interval)"
    return (
        f"{mib(first.worker_kib)} with {first.enqueued:,} enqueued (t = {first.t:.0f} s) /"
        f" {mib(last.worker_kib)} with {last.enqueued:,} (t = {last.t:.0f} s)"
    )


def broker_growth(run: Run) -> str:
    before, after = run.broker_before_kib, run.broker_after_kib
    text = f"{mib(before)} / {mib(after)}"
    if before is None or after is None:
        return text
    per_job = (after - before) * 1024 / max(run.jobs.done, 1)
    return f"{text} ({signed_mib(after - before)}, {per_job:,.0f} bytes per job)"


def short_verdict(run: Run) -> str:
    late = [s.lateness for s in run.short]
    if not late:
        return "the short-countdown jobs were not enqueued"
    if any(x is None for x in late):
        return "some short-countdown jobs did NOT run"
    worst = max(x for x in late if x is not None)
    if worst <= LATE_LIMIT:
        return (
            f"the {len(late)} short-countdown jobs enqueued after them ran at most"
            f" {worst:.2f} s after their due time (nothing held up)"
        )
    return f"a short-countdown job ran {worst:.1f} s late (> {LATE_LIMIT:g} s): held up"


def notes(run: Run, args: argparse.Namespace) -> list[str]:
    out = [
        "RSS is VmRSS of /proc/PID/status, read every second by a thread of the benchmark"
        " process; the baseline is the median of the first"
        f" {BASELINE_SAMPLES} samples, taken after the worker ran a plain and a 1 s delayed"
        " job (both consumers joined, the tier topics exist). VmHWM is the kernel's high-water"
        " mark, start-up included, so it also covers spikes between two samples.",
        (
            "the broker keeps every record in memory (Tansu, memory-only): its growth is the"
            " records waiting, expected and not the worker's."
            if args.broker == "embedded"
            else "Apache Kafka keeps the records in its log files on disk (the page cache"
            " holding them is not in the JVM's RSS): its RSS growth is heap and buffers."
        ),
        f"'bounded' means the worker's peak RSS rose at most {args.bounded_mib:.0f} MiB above"
        f" the baseline (at N = 1,000,000 that is {args.bounded_mib * MIB * 1024 / 1e6:.0f}"
        " bytes per job, far less than one delayed record, about 300 bytes with its headers).",
        "the worker's dispatcher fetches the head of each tier partition, sees it is not due"
        " (`kj-not-before` about 17 min / 68 min away) and pauses the partition; librdkafka"
        " drops what it prefetched for a paused partition.",
        "the machine's 2 CPUs are shared by the broker, the benchmark process (producer) and the"
        " worker; another test suite may have been running at the same time (see the load"
        " average).",
    ]
    if run.jobs.note:
        out.append(f"fallback: {run.jobs.note}.")
    out += [f"error: {error}" for error in run.errors]
    return out


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.arg_parser("bench.delayed_memory", __doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="delayed jobs to enqueue")
    common.add_out_argument(parser)
    common.add_options(
        parser,
        ("--after", 30.0, "seconds of sampling after the flush"),
        (
            "--enqueue-budget",
            300.0,
            "projected enqueue seconds above which the run falls back to --fallback-jobs",
        ),
        ("--fallback-jobs", 300_000, None),
        ("--enqueue-limit", 600.0, "hard limit of the enqueue (seconds)"),
        ("--startup-timeout", 90.0, "seconds for the worker to be up"),
        ("--bounded-mib", 32.0, "worker RSS growth (peak - baseline) still called bounded"),
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.fallback_jobs < 1 or args.after < 5:
        parser.error("--jobs and --fallback-jobs must be positive, --after at least 5")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.delayed_memory")
    commit = common.source_state().removeprefix("commit ")  # read by `begin`, at the start
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        common.progress(f"broker: {handle.description} at {handle.bootstrap} (pid {handle.pid})")
        run = measure(handle.bootstrap, handle.pid, args, Path(tmp))
    text = section(
        invocation.command,
        invocation.date,
        commit,
        handle.description,
        invocation.load_average(),
        args,
        run,
    )
    print()
    print(text)
    common.append_section(args.out, text)
    figures = summary(run)
    ok = (
        not run.errors
        and run.early_runs == 0
        and figures["growth_peak"] is not None
        and figures["growth_peak"] / MIB <= args.bounded_mib
        and all(s.lateness is not None and s.lateness <= LATE_LIMIT for s in run.short)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
