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
`bench.celery_brokers` measures the same round trips in its own run with `measure`,
`table_rows` and `HEADER` (``--inspect-calls``).
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

import kombu.pools
from celery import Celery  # type: ignore[import-untyped]

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)
from bench import common

COMMANDS = ("ping", "stats", "conf", "active_queues", "registered")
START_TIMEOUT = 90.0
CALL_TIMEOUT = 5.0
HEADER = ["inspect", "kafkajobs:// median", "p90", "redis:// median", "p90", "kafkajobs / redis"]

Times = dict[str, list[float]]  # the round trips of each command, in ms

app = Celery("bench_inspect", broker=os.environ.get("BENCH_INSPECT_BROKER", "memory://"))
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)


@app.task(name="bench_inspect.noop")
def noop() -> None:
    """A registered task (so `registered` has something to list)."""


def client(url: str) -> Celery:
    made = Celery("bench_inspect_client", broker=url, set_as_current=False)
    made.conf.update(broker_connection_retry_on_startup=True)
    return made


def measure(url: str, calls: int, workdir: Path, tag: str, budget: float | None = None) -> Times:
    """Start a worker on `url`, then time `calls` round trips of each command (ms).

    The worker's log is `workdir / f"worker-{tag}.log"`. Raises when the worker does not
    answer a ping within START_TIMEOUT s, a call gets no reply within CALL_TIMEOUT s, or
    the calls take more than `budget` s (None: no limit).
    """
    name = f"inspect-{tag}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    env = {**os.environ, "BENCH_INSPECT_BROKER": url, "PYTHONPATH": str(common.ROOT)}
    command = [sys.executable, "-m", "celery", "-A", "bench.celery_inspect", "worker"]
    command += ["-P", "threads", "-c", "2", "-n", name, "-Q", f"bench-inspect-{tag}"]
    command += ["--without-mingle", "--without-gossip", "-l", "WARNING"]
    worker = common.spawn(command, env, workdir / f"worker-{tag}.log", cwd=common.ROOT)
    caller = client(url)
    times: Times = {c: [] for c in COMMANDS}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not caller.control.ping([name], timeout=1.0):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{tag}: worker {name} did not answer within the deadline")
        common.progress(f"{tag}: worker answers; {calls} calls of each command")
        inspect = caller.control.inspect([name], timeout=CALL_TIMEOUT)
        calls_deadline = None if budget is None else time.monotonic() + budget
        for i in range(calls):
            if calls_deadline is not None and time.monotonic() > calls_deadline:
                raise RuntimeError(f"{tag}: only {i} of {calls} rounds within {budget:.0f} s")
            for command_name in COMMANDS:
                started = time.perf_counter()
                reply = getattr(inspect, command_name)()
                elapsed = (time.perf_counter() - started) * 1000
                if not reply or name not in reply:
                    raise RuntimeError(f"{tag}: no {command_name} reply in {CALL_TIMEOUT} s")
                times[command_name].append(elapsed)
    finally:
        caller.close()
        # The control producers sit in kombu's process-wide pools: close them too, so no
        # client of this broker keeps running (or logging) in this process afterwards.
        kombu.pools.reset()  # type: ignore[no-untyped-call]
        common.stop_process(worker, 30)  # the worker started here, by its PID
    return times


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def table_rows(kafkajobs: Times | None, baseline: Times | None) -> list[list[str]]:
    """A row of `HEADER` per command; None: that broker was not measured (n/a cells)."""
    rows = []
    for command in COMMANDS:
        cells: list[str] = [command]
        medians: list[float | None] = []
        for times in (kafkajobs, baseline):
            values = times[command] if times else []
            median = statistics.median(values) if values else None
            medians.append(median)
            cells += [fmt_ms(median), fmt_ms(p90(values) if values else None)]
        ours, theirs = medians
        cells.append("n/a" if ours is None or not theirs else f"{ours / theirs:.1f}x")
        rows.append(cells)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--broker", default="embedded", choices=common.BROKERS)
    parser.add_argument("--calls", type=int, default=30)
    common.add_out_argument(parser)
    args = parser.parse_args(argv)
    from bench.celery_brokers import redis_server  # here: bench.celery_brokers imports this

    invocation = common.begin("bench.celery_inspect")
    with tempfile.TemporaryDirectory() as tmp, common.broker(args.broker) as kafka:
        workdir = Path(tmp)
        with redis_server(None, workdir) as redis:
            kafkajobs = measure(f"kafkajobs://{kafka.bootstrap}", args.calls, workdir, "kafkajobs")
            baseline = measure(redis.url, args.calls, workdir, "redis")
    rows = table_rows(kafkajobs, baseline)
    print(common.text_table(HEADER, rows))
    text = "\n".join(
        [
            f"### Inspect round trips on {kafka.name} (bench/celery_inspect.py)",
            "",
            *common.report_head(invocation.command, invocation.date, invocation.load_average()),
            f"- Kafka broker: {kafka.description}",
            f"- Redis: {redis.description}",
            f"- calls per command: {args.calls}, one worker (-P threads -c 2), by name",
            "",
            common.markdown_table(HEADER, rows),
            "",
        ]
    )
    common.append_section(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
