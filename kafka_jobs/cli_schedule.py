"""`kafka-jobs schedule list | pause NAME | resume NAME | trigger NAME -A MODULE`.

The commands are records on the group's schedules topic (`<group>.schedules`);
the worker that leads applies each once: pause (no fire time is enqueued until
resumed), resume (fire times that fell while paused are not caught up), trigger
(one job now, outside the schedule). `list` reads the topic. Exit codes: 0 done,
2 the schedule is not declared by the app (or the broker did not acknowledge).
"""

from __future__ import annotations

import argparse
import datetime
import json

_ACTIONS = (
    ("list", "the app's schedules: paused, last and next run"),
    ("pause", "stop enqueueing a schedule's fire times (the leader applies it)"),
    ("resume", "enqueue a paused schedule's fire times again, from now on"),
    ("trigger", "enqueue a schedule's job once, now"),
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `schedule` command to the `kafka-jobs` parser's commands."""
    schedule = commands.add_parser("schedule", help="list, pause, resume or trigger schedules")
    actions = schedule.add_subparsers(dest="schedule_action", required=True)
    for name, text in _ACTIONS:
        action = actions.add_parser(name, help=text)
        if name != "list":
            action.add_argument("name", help="the schedule's name")
        action.add_argument(
            "-A", "--app", required=True, metavar="MODULE[:APP]", help="module declaring them"
        )
        action.add_argument("-g", "--group", help="worker group (default: the app's group_id)")
        action.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS")
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON array")
        action.set_defaults(command=run)


def run(options: argparse.Namespace) -> int:
    """List the schedules, or write one command for the leader."""
    from kafka_jobs.loader import load_app
    from kafka_jobs.recurring.overview import read_rows
    from kafka_jobs.recurring.state import schedules_topic
    from kafka_jobs.recurring.topic import SCHEDULES_TOPIC_CONFIG, send_command

    app = load_app(options.app)
    group = options.group or app.settings.group_id
    if options.schedule_action == "list":
        rows = read_rows(app, group, options.timeout)
        if options.json:
            print(json.dumps([row.as_dict() for row in rows]), flush=True)
            return 0
        header = ["name", "job", "when", "state", "last run", "next run", "pending"]
        table = [
            [
                r.name, r.task or "-", r.when, "paused" if r.paused else "active",
                _when(r.last_fire_ms), _when(r.next_ms), str(r.pending_commands),
            ]
            for r in rows
        ]  # fmt: skip
        _print(header, table)
        return 0
    if options.name not in app.schedules:
        known = ", ".join(app.schedules) or "none"
        print(f"no schedule named {options.name!r} in {options.app} (declared: {known})")
        return 2
    topic = schedules_topic(group)
    app.create_topics([topic], partitions=1, config=SCHEDULES_TOPIC_CONFIG)
    offset = send_command(
        app.settings, topic, options.name, options.schedule_action, options.timeout
    )
    print(f"{options.schedule_action} {options.name}: sent to {topic} at offset {offset}")
    return 0


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _print(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
