"""The `kafka-jobs` command line: worker, status, dlq, result, revoke, topics, web, broker."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kafka_jobs import cli_control, cli_results, cli_schedule, cli_topics, cli_worker
from kafka_jobs.errors import ConfigurationError, KafkaJobsError
from kafka_jobs.instrumentation import logs

if TYPE_CHECKING:
    from kafka_jobs.app import App


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kafka-jobs` console script."""
    parser = _parser()
    options = parser.parse_args(argv)
    options.argv = list(sys.argv[1:] if argv is None else argv)  # for --processes children
    logs.configure(options.log_level, options.log_format)
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
    parser.add_argument(
        "--log-format",
        default=os.environ.get("KAFKA_JOBS_LOG_FORMAT", "text"),
        choices=logs.FORMATS,
        help="text, kv (key=value) or json lines (default: KAFKA_JOBS_LOG_FORMAT or text)",
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
        help="topics to consume (default: all the app's, or none with --topics-pattern)",
    )
    worker.add_argument(
        "--topics-pattern",
        metavar="REGEX",
        help="also consume every topic whose whole name matches, new ones included"
        " (never dead-letter topics unless named with --topics)",
    )
    worker.add_argument(
        "--shutdown-timeout", type=float, help="seconds to wait for in-flight jobs on stop"
    )
    worker.add_argument("--scheduler", metavar="MODULE:CLASS", help="scheduler (default FIFO)")
    worker.add_argument(
        "--pool",
        choices=["threads", "processes"],
        help="where sync jobs run (default: KAFKA_JOBS_POOL or threads)",
    )
    worker.add_argument(
        "--async-concurrency",
        type=int,
        metavar="N",
        help="most async jobs in flight (default: KAFKA_JOBS_ASYNC_CONCURRENCY or 100)",
    )
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    worker.add_argument(
        "--processes",
        metavar="N",
        help="run N worker processes in the group under a supervisor (auto: one per core)",
    )
    worker.add_argument(
        "--max-memory-per-child",
        type=float,
        metavar="MIB",
        help="with --processes: recycle a child whose resident memory passes this",
    )
    cli_worker.add_options(worker)  # health, summary, time limits
    worker.set_defaults(command=_worker)

    status = commands.add_parser("status", help="lag per partition of a worker group")
    status.add_argument("-A", "--app", metavar="MODULE[:APP]", help="app whose topics to show")
    status.add_argument("-g", "--group", help="consumer group (default: the app's)")
    status.add_argument("-t", "--topics", nargs="+", metavar="TOPIC", help="topics to show")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    status.set_defaults(command=_status)

    dlq = commands.add_parser("dlq", help="list, show and replay dead letters")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    listing = dlq_commands.add_parser("list", help="a table of the dead letters in a topic")
    listing.add_argument("topic")
    listing.add_argument("--all", action="store_true", help="include letters already replayed")
    listing.set_defaults(command=_dlq_list)
    show = dlq_commands.add_parser("show", help="one dead letter, whole")
    show.add_argument("topic")
    show.add_argument("offset", type=int)
    show.add_argument("--partition", type=int, default=0)
    show.set_defaults(command=_dlq_show)
    replay = dlq_commands.add_parser("replay", help="re-enqueue dead letters to their topics")
    replay.add_argument("topic")
    replay.add_argument("--task", help="only letters of this task")
    replay.add_argument("--limit", type=int, help="at most this many")
    replay.set_defaults(command=_dlq_replay)
    for action in (listing, show, replay):
        action.add_argument("-A", "--app", metavar="MODULE[:APP]", help="app whose settings to use")

    cli_results.register(commands)
    cli_control.register(commands)
    cli_topics.register(commands)
    cli_schedule.register(commands)

    web = commands.add_parser("web", help="a dashboard of workers, lag and dead letters")
    web.add_argument("-A", "--app", metavar="MODULE[:APP]", help="app whose settings to use")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    web.add_argument("--port", type=int, default=8088)
    web.add_argument(
        "--token",
        default=os.environ.get("KAFKA_JOBS_WEB_TOKEN"),
        help="needed for replays (basic-auth password or bearer token); without one,"
        " replays are allowed only on a loopback address (default: KAFKA_JOBS_WEB_TOKEN)",
    )
    web.add_argument("--refresh", type=float, default=5.0, help="seconds between broker reads")
    web.set_defaults(command=_web)

    broker = commands.add_parser(
        "broker",
        help="run a development broker in the foreground: embedded (memory only) or Apache Kafka",
    )
    broker.add_argument(
        "--port", type=int, help="client port (of the first node) [9092; a resumed --data: its own]"
    )
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument(
        "--apache",
        action="store_true",
        help="Apache Kafka in KRaft mode (needs java and, on first use, mvn) instead of Tansu",
    )
    broker.add_argument("--brokers", type=int, default=1, help="Apache Kafka nodes [1]")
    broker.add_argument(
        "--data", type=Path, help="keep Apache Kafka's data here (a second start resumes it)"
    )
    broker.add_argument("--version", default=None, help="Apache Kafka version [4.4.0]")
    broker.set_defaults(command=_broker)
    return parser


def _worker(options: argparse.Namespace) -> int:
    from kafka_jobs.loader import load_app
    from kafka_jobs.processing.scheduler import load_scheduler

    if options.processes is not None:
        return _supervise(options)
    app = load_app(options.app)
    if options.async_concurrency:
        app.settings = app.settings.replace(async_concurrency=options.async_concurrency)
    cli_worker.apply(app, options)
    worker = app.worker(
        pool=options.pool,
        app_spec=options.app,
        concurrency=options.concurrency,
        group_id=options.group,
        topics=options.topics,
        topics_pattern=options.topics_pattern,
        shutdown_timeout=options.shutdown_timeout,
        scheduler_class=load_scheduler(options.scheduler) if options.scheduler else None,
    )
    if options.metrics_port:
        worker.metrics().serve(options.metrics_port)
    if options.health_port is not None:
        worker.serve_health(options.health_port, options.health_host, options.health_stall)
    _print_table(
        ["setting", "value"],
        [
            ["bootstrap servers", app.settings.bootstrap_servers],
            ["consumer group", worker.group_id],
            ["topics", ", ".join(worker.topics) or "-"],
            *([["topics pattern", options.topics_pattern]] if options.topics_pattern else []),
            ["tasks", ", ".join(sorted(app.tasks)) or "(none)"],
            ["concurrency", f"{worker.concurrency} ({worker.settings.pool})"],
            ["shutdown timeout", f"{worker.settings.shutdown_timeout:g}s"],
        ],
    )
    return worker.run()


def _supervise(options: argparse.Namespace) -> int:
    from kafka_jobs.supervisor import Supervisor, process_count

    try:
        processes = process_count(options.processes)
    except ValueError as exc:
        raise ConfigurationError(f"--processes {options.processes}: {exc}") from None
    health = None if options.health_port is None else (options.health_port, options.health_host)
    return Supervisor(
        options.argv,
        processes,
        max_memory_mb=options.max_memory_per_child,
        # children read their own default; the supervisor waits long enough for it
        shutdown_timeout=options.shutdown_timeout or 60.0,
        health=health,
    ).run()


def _app_for(options: argparse.Namespace) -> App:
    from kafka_jobs.app import App
    from kafka_jobs.loader import load_app

    return load_app(options.app) if options.app else App()


def _dlq_list(options: argparse.Namespace) -> int:
    from kafka_jobs import dlq

    found = dlq.read(_app_for(options), options.topic)
    letters = found.letters if options.all else found.pending()
    rows = []
    for letter in letters:
        info = letter.info
        rows.append(
            [
                f"{letter.partition}:{letter.offset}",
                letter.task,
                info.get("reason", "?"),
                info.get("exception", "?").rsplit(".", 1)[-1],
                _shorten(info.get("message", ""), 50),
                info.get("attempts", "?"),
                _when(info.get("last-failed-at")),
                "yes" if (letter.partition, letter.offset) in found.replayed else "",
            ]
        )
    header = ["partition:offset", "task", "reason", "error", "message", "attempts", "failed at"]
    _print_table([*header, "replayed"], rows)
    print(f"{len(letters)} dead letter(s) in {options.topic}", flush=True)
    return 0


def _dlq_show(options: argparse.Namespace) -> int:
    from kafka_jobs import dlq

    found = dlq.read(_app_for(options), options.topic)
    for letter in found.letters:
        if (letter.partition, letter.offset) == (options.partition, options.offset):
            break
    else:
        print(f"no dead letter at {options.topic}[{options.partition}]@{options.offset}")
        return 1
    info = letter.info
    rows = [[name, _shorten(value, 100)] for name, value in info.items() if name != "traceback"]
    rows.append(["key", repr(letter.key)])
    rows.append(["task", letter.task])
    replayed = (letter.partition, letter.offset) in found.replayed
    rows.append(["replayed", "yes" if replayed else "no"])
    _print_table(["field", "value"], rows)
    print("value:")
    print(_text(letter.value))
    print("traceback:")
    print(info.get("traceback", "(none)"), flush=True)
    return 0


def _dlq_replay(options: argparse.Namespace) -> int:
    from kafka_jobs import dlq
    from kafka_jobs.instrumentation.progress import Progress

    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress("re-enqueued", total).__enter__()
        bar.update(done)

    try:
        replayed = dlq.replay(
            _app_for(options),
            options.topic,
            task=options.task,
            limit=options.limit,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.__exit__()
    print(f"replayed {len(replayed)} dead letter(s) from {options.topic}", flush=True)
    return 0


def _status(options: argparse.Namespace) -> int:
    from kafka_jobs.instrumentation import status
    from kafka_jobs.instrumentation.publisher import read_states

    app = _app_for(options)
    group = options.group or app.settings.group_id
    topics = options.topics or app.topics()
    dead_letters = app.dead_letter_topics(topics)
    while True:
        states = read_states(app)
        rows = status.collect(app, group, topics, dead_letters, states)
        if options.json:
            print(json.dumps([row.as_dict() for row in rows]), flush=True)
        else:
            _print_table(
                ["group", "topic", "partition", "committed", "end", "lag", "paused", "owner"],
                [
                    [
                        r.group,
                        r.topic,
                        str(r.partition),
                        "-" if r.committed is None else str(r.committed),
                        str(r.end),
                        str(r.lag),
                        "-" if r.paused is None else ("yes" if r.paused else "no"),
                        r.worker or r.owner,
                    ]
                    for r in rows
                    if r.kind == "jobs"
                ],
            )
            workers = [w for w in states if w["group"] == group]
            if workers:
                _print_table(
                    [
                        "worker",
                        "threads busy",
                        "jobs/s",
                        "partitions",
                        "done",
                        "failed",
                        "not run / held",
                        "seen",
                    ],
                    [
                        [
                            f"{w['host']}:{w['pid']}",
                            f"{w['busy']}/{w['concurrency']} ({w['pool']})",
                            f"{w['jobs_per_second']:,.1f}",
                            str(len(w["partitions"])),
                            f"{w['totals']['succeeded']:,}",
                            f"{w['totals']['failed']:,}",
                            status.describe_control_counts(w["totals"]),
                            f"{(time.time() * 1000 - w['at']) / 1000:.0f}s ago",
                        ]
                        for w in workers
                    ],
                )
            depth = [[r.topic, str(r.partition), str(r.lag)] for r in rows if r.kind != "jobs"]
            if depth:
                _print_table(["dead-letter topic", "partition", "records"], depth)
        if not options.watch:
            return 0
        time.sleep(options.watch)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(ms: str | None) -> str:
    if not ms or not ms.isdigit():
        return "?"
    moment = datetime.datetime.fromtimestamp(int(ms) / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _text(value: bytes | None) -> str:
    if value is None:
        return "(none)"
    try:
        return value.decode()
    except UnicodeDecodeError:
        return f"({len(value)} bytes, not text) {value[:200]!r}"


def _web(options: argparse.Namespace) -> int:
    try:
        from kafka_jobs.web import DashboardServer
        from kafka_jobs.web.server import is_loopback
    except ImportError as exc:
        raise KafkaJobsError(
            f"the dashboard needs Flask: pip install 'kafka-jobs[web]' ({exc})"
        ) from exc
    server = DashboardServer(
        _app_for(options),
        options.host,
        options.port,
        token=options.token,
        sample_interval=options.refresh,
    )
    if options.token:
        writes = "need the token"
    else:
        writes = "allowed (loopback only)" if is_loopback(options.host) else "off: no --token"
    print(f"dashboard on {server.url} (replays {writes}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _broker(options: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())  # the broker children must not be orphaned
    if options.apache:
        return _apache_broker(options, stop)
    if options.brokers != 1 or options.data or options.version:
        raise KafkaJobsError("--brokers, --data and --version need --apache")
    from kafka_jobs.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=options.port or 9092, host=options.host).start()
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


def _apache_broker(options: argparse.Namespace, stop: threading.Event) -> int:
    from kafka_jobs.apache import DEFAULT_VERSION, LAYOUT_FILE, ApacheKafkaCluster

    resuming = options.data is not None and (options.data / LAYOUT_FILE).exists()
    cluster = ApacheKafkaCluster(
        brokers=options.brokers,
        port=options.port if options.port is not None or resuming else 9092,
        data=options.data,
        version=options.version or DEFAULT_VERSION,
        host=options.host,
    )
    try:
        cluster.start()
        where = f"data in {cluster.data}" if cluster.keep_data else "temporary data"
        print(
            f"Apache Kafka {cluster.version}, {cluster.brokers} node(s) on "
            f"{cluster.bootstrap_servers} ({where}; Ctrl-C stops it)"
        )
        print(f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}", flush=True)
        while not stop.wait(0.5):
            cluster.check_alive()  # raises with the tail of a dead node's log
    finally:
        cluster.stop()
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
