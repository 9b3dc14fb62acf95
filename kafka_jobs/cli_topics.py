"""`kafka-jobs topics plan | migrate -A MODULE`: an app's declared topics against the cluster.

Exit codes: 0 nothing differs (plan) or everything was applied (migrate); 1 plan
found differences (so a CI step can fail on drift), or migrate met an error.
Warnings (fewer partitions declared than exist, another replication factor) do
not change the exit code: they are left alone by design.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `topics` command to the `kafka-jobs` parser's commands."""
    topics = commands.add_parser(
        "topics", help="compare an app's declared topics with the cluster, or apply them"
    )
    actions = topics.add_subparsers(dest="topics_action", required=True)
    for name, text in (
        ("plan", "print what differs from the cluster (changes nothing)"),
        ("migrate", "create missing topics, add partitions, set declared configs"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "-A", "--app", required=True, metavar="MODULE[:APP]", help="module declaring the jobs"
        )
        action.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS")
        action.set_defaults(command=run)


def run(options: argparse.Namespace) -> int:
    """Print the plan, or apply it and print what was done."""
    from kafka_jobs import declarative
    from kafka_jobs.loader import load_app

    app = load_app(options.app)
    if options.topics_action == "plan":
        changes = declarative.plan(app, options.timeout)
        print(declarative.table(changes), flush=True)
        return 1 if any(c.action != "warn" for c in changes) else 0
    done = declarative.migrate(app, options.timeout)
    print(declarative.table(done), flush=True)
    return 1 if any(c.action == "error" for c in done) else 0
