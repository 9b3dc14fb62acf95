"""No-op throughput of `kafka-jobs worker --processes 1` against `--processes 2`, one broker.

    python -m bench.processes [--broker embedded|apache] [--jobs N] [--runs R] [--out FILE]

Each run pre-fills a fresh topic of 6 partitions with `--jobs` no-op jobs
(`bench.throughput.prefill`), then starts `python -m kafka_jobs worker -A
bench.processes_app --processes P -c 4` for P = 1 and P = 2 (a fresh group each),
and times from the first job's start to the N-th job's end, over all child
processes (`bench/processes_app.py` counts in memory and reports every 0.1 s).
Group join and start-up are excluded. The raw confluent-kafka consume loop of
`bench.throughput` is measured in the same run as the yardstick for one process.
The medians of `--runs` runs are printed and, with `--out`, appended as a section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from bench.common import Figure, fmt_rate
from bench.throughput import fmt_ratio, prefill, worker_raw

PARTITIONS = 6
SECTION = "## Worker processes (bench/processes.py)"


def count(directory: Path) -> tuple[int, float, float]:
    """Jobs run so far over every process, and the first start / latest end."""
    total, first, last = 0, 0.0, 0.0
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced
        if data["count"]:
            total += data["count"]
            first = data["first"] if not first else min(first, data["first"])
            last = max(last, data["last"])
    return total, first, last


def run_processes(bootstrap: str, processes: int, n: int, timeout: float, workdir: Path) -> Figure:
    """One timed run of `--processes processes` over a fresh pre-filled topic."""
    topic = common.create_topic(bootstrap, "bench-proc", PARTITIONS)
    prefill(bootstrap, topic, n)
    marks = workdir / f"p{processes}-{topic}"
    marks.mkdir()
    env = common.worker_env(bootstrap)
    env.update(BENCH_PROCESSES_DIR=str(marks), BENCH_PROCESSES_TOPIC=topic)
    command = [
        *(sys.executable, "-m", "kafka_jobs", "--log-level", "warning", "worker"),
        *("-A", "bench.processes_app", "--processes", str(processes), "-c", "4"),
        *("--group", common.unique("bench-g-proc")),
    ]
    started = time.monotonic()
    process = common.spawn(command, env, workdir / "worker.log")
    try:
        deadline = started + timeout
        done, first, last = 0, 0.0, 0.0
        while time.monotonic() < deadline and process.poll() is None:
            done, first, last = count(marks)
            if done >= n:
                break
            time.sleep(0.05)
    finally:
        common.stop_process(process, 60)
    if done < n:
        return Figure(jobs=done, error=f"{done} of {n} jobs within {timeout:.0f}s")
    return Figure(jobs=n, seconds=last - first, startup=first - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.runs_parser("bench.processes", __doc__, 100_000, "jobs per run")
    common.add_options(parser, ("--timeout", 180.0, "seconds allowed per worker run"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = common.begin("bench.processes")
    rates: dict[str, list[float]] = {"1": [], "2": [], "raw": []}
    with common.broker(args.broker) as handle, tempfile.TemporaryDirectory() as tmp:
        bootstrap = handle.bootstrap
        common.progress(f"broker: {handle.description} at {bootstrap}")
        for r in range(args.runs):
            for processes in (1, 2):
                figure = run_processes(bootstrap, processes, args.jobs, args.timeout, Path(tmp))
                common.progress(
                    f"[run {r + 1}/{args.runs}] --processes {processes}: {common.describe(figure)}"
                )
                if figure.rate is not None:
                    rates[str(processes)].append(figure.rate)
            raw = worker_raw(bootstrap, args.jobs, args.timeout)
            common.progress(f"[run {r + 1}/{args.runs}] raw consume loop: {common.describe(raw)}")
            if raw.rate is not None:
                rates["raw"].append(raw.rate)
    medians = {k: statistics.median(v) if v else None for k, v in rates.items()}
    rows = [
        ["kafka-jobs worker --processes 1 -c 4", fmt_rate(medians["1"])],
        ["kafka-jobs worker --processes 2 -c 4", fmt_rate(medians["2"])],
        ["raw confluent-kafka consume loop (one process)", fmt_rate(medians["raw"])],
        ["--processes 2 / --processes 1", fmt_ratio(medians["2"], medians["1"])],
        ["--processes 1 / raw", fmt_ratio(medians["1"], medians["raw"])],
        ["--processes 2 / raw", fmt_ratio(medians["2"], medians["raw"])],
    ]
    print(f"\nbroker: {handle.description}")
    print(common.text_table(["no-op jobs/s (median of runs)", "rate"], rows))
    if str(args.out) != "-":
        text = "\n".join(
            [
                *common.report_head(invocation.command, invocation.date, invocation.load_average()),
                f"- broker: {handle.description}",
                "",
                common.markdown_table(["no-op jobs/s, medians of runs", "rate"], rows),
                "",
                "Per run (jobs/s): "
                + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in rates[k])}" for k in rates),
                "",
            ]
        )
        intro = "No-op jobs with one and two supervised worker processes; see the docstring.\n\n"
        common.ensure_section(Path(args.out), SECTION, "processes", intro)
        common.replace_block(Path(args.out), f"processes/{handle.kind}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
