"""Celery remote control round trips: `inspect` on kafkajobs:// against redis://, one run.

    python -m bench.celery_inspect [--broker embedded|apache] [--calls N] [--out FILE]

For each broker (this project's ``kafkajobs://`` on the Kafka broker of `--broker`, and
``redis://`` on a redis-server started here, as in `bench.celery_brokers`), one
``celery -A bench.celery_inspect worker -P threads -c 2`` is started with remote
control on and Celery's defaults otherwise (kafkajobs://: nothing but the URL). Once it
answers a ping, each inspect command below is sent `--calls` times to that worker by
name (``app.control.inspect([worker])``: Celery returns as soon as that worker
replied), and the wall time of each call is recorded. Reported: median and 90th
percentile per command and broker, and the ratio kafkajobs:// / redis://.

Commands: ``ping``, ``stats``, ``conf``, ``active_queues``, ``registered``.

The module is also the workers' Celery app: ``BENCH_INSPECT_BROKER`` is its broker URL.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery  # type: ignore[import-untyped]

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)
from bench import common
from bench.celery_brokers import redis_server

COMMANDS = ("ping", "stats", "conf", "active_queues", "registered")
START_TIMEOUT = 90.0
CALL_TIMEOUT = 5.0

app = Celery("bench_inspect", broker=os.environ.get("BENCH_INSPECT_BROKER", "memory://"))
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)


@app.task(name="bench_inspect.noop")
def noop() -> None:
    """A registered task (so `registered` has something to list)."""


def client(url: str) -> Celery:
    made = Celery("bench_inspect_client", broker=url, set_as_current=False)
    made.conf.update(broker_connection_retry_on_startup=True)
    return made


def measure(url: str, calls: int, workdir: Path, tag: str) -> dict[str, list[float]]:
    """Start a worker on `url`, then time `calls` round trips of each command (ms)."""
    name = f"inspect-{tag}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    env = {**os.environ, "BENCH_INSPECT_BROKER": url, "PYTHONPATH": str(common.ROOT)}
    command = [sys.executable, "-m", "celery", "-A", "bench.celery_inspect", "worker"]
    command += ["-P", "threads", "-c", "2", "-n", name, "-Q", f"bench-inspect-{tag}"]
    command += ["--without-mingle", "--without-gossip", "-l", "WARNING"]
    worker = common.spawn(command, env, workdir / f"worker-{tag}.log", cwd=common.ROOT)
    caller = client(url)
    times: dict[str, list[float]] = {c: [] for c in COMMANDS}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not caller.control.ping([name], timeout=1.0):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{tag}: worker {name} did not answer within the deadline")
        common.progress(f"{tag}: worker answers; {calls} calls of each command")
        inspect = caller.control.inspect([name], timeout=CALL_TIMEOUT)
        for _ in range(calls):
            for command_name in COMMANDS:
                started = time.perf_counter()
                reply = getattr(inspect, command_name)()
                elapsed = (time.perf_counter() - started) * 1000
                if not reply or name not in reply:
                    raise RuntimeError(f"{tag}: no {command_name} reply in {CALL_TIMEOUT} s")
                times[command_name].append(elapsed)
    finally:
        caller.close()
        common.stop_process(worker, 30)  # the worker started here, by its PID
    return times


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--broker", default="embedded", choices=common.BROKERS)
    parser.add_argument("--calls", type=int, default=30)
    common.add_out_argument(parser)
    args = parser.parse_args(argv)
    invocation = common.begin("bench.celery_inspect")
    with tempfile.TemporaryDirectory() as tmp, common.broker(args.broker) as kafka:
        workdir = Path(tmp)
        with redis_server(None, workdir) as redis:
            kafkajobs = measure(f"kafkajobs://{kafka.bootstrap}", args.calls, workdir, "kafkajobs")
            baseline = measure(redis.url, args.calls, workdir, "redis")
    rows = []
    for command in COMMANDS:
        ours, theirs = statistics.median(kafkajobs[command]), statistics.median(baseline[command])
        rows.append(
            [
                command,
                f"{ours:.1f} ms",
                f"{p90(kafkajobs[command]):.1f} ms",
                f"{theirs:.1f} ms",
                f"{p90(baseline[command]):.1f} ms",
                f"{ours / theirs:.1f}x",
            ]
        )
    header = [
        "inspect",
        "kafkajobs:// median",
        "p90",
        "redis:// median",
        "p90",
        "kafkajobs / redis",
    ]
    print(common.text_table(header, rows))
    text = "\n".join(
        [
            f"### Inspect round trips on {kafka.name} (bench/celery_inspect.py)",
            "",
            *common.report_head(invocation.command, invocation.date, invocation.load_average()),
            f"- Kafka broker: {kafka.description}",
            f"- Redis: {redis.description}",
            f"- calls per command: {args.calls}, one worker (-P threads -c 2), by name",
            "",
            common.markdown_table(header, rows),
            "",
        ]
    )
    common.append_section(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
