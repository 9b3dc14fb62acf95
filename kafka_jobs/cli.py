"""The `kafka-jobs` command line: `worker` and `broker`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from kafka_jobs.errors import KafkaJobsError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kafka-jobs` console script."""
    parser = _parser()
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, options.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code: int = options.command(options)
    except KafkaJobsError as exc:
        print(f"kafka-jobs: {exc}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-jobs", description="Background jobs on Apache Kafka."
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the jobs of an app")
    worker.add_argument(
        "-A", "--app", required=True, metavar="MODULE[:APP]", help="module that registers the jobs"
    )
    worker.add_argument(
        "-c",
        "--concurrency",
        type=int,
        help="worker threads (default: KAFKA_JOBS_CONCURRENCY or 4)",
    )
    worker.add_argument(
        "-g", "--group", help="consumer group id (default: KAFKA_JOBS_GROUP_ID or kafka-jobs)"
    )
    worker.add_argument(
        "-t",
        "--topics",
        nargs="+",
        metavar="TOPIC",
        help="topics to consume (default: all the app's)",
    )
    worker.add_argument(
        "--shutdown-timeout", type=float, help="seconds to wait for in-flight jobs on stop"
    )
    worker.set_defaults(command=_worker)

    broker = commands.add_parser(
        "broker", help="run the embedded development broker in the foreground"
    )
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--host", default="127.0.0.1")
    broker.set_defaults(command=_broker)
    return parser


def _worker(options: argparse.Namespace) -> int:
    from kafka_jobs.loader import load_app

    app = load_app(options.app)
    worker = app.worker(
        concurrency=options.concurrency,
        group_id=options.group,
        topics=options.topics,
        shutdown_timeout=options.shutdown_timeout,
    )
    _print_table(
        ["setting", "value"],
        [
            ["bootstrap servers", app.settings.bootstrap_servers],
            ["consumer group", worker.group_id],
            ["topics", ", ".join(worker.topics)],
            ["tasks", ", ".join(sorted(app.tasks)) or "(none)"],
            ["concurrency", str(worker.concurrency)],
            ["shutdown timeout", f"{worker.settings.shutdown_timeout:g}s"],
        ],
    )
    return worker.run()


def _broker(options: argparse.Namespace) -> int:
    from kafka_jobs.broker import EmbeddedBroker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())  # the broker child must not be orphaned
    broker = EmbeddedBroker(port=options.port, host=options.host).start()
    print(f"embedded broker listening on {broker.bootstrap_servers} (memory only; Ctrl-C stops it)")
    print(f"export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
    try:
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                print("kafka-jobs: the broker process exited", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    print(f"+{line}+")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print(f"+{line}+")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(f"+{line}+", flush=True)
