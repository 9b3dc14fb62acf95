"""`kafka-jobs revoke JOB_ID... -A MODULE [--ttl SECONDS] [--terminate]`: revoke jobs."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `revoke` command to the `kafka-jobs` parser's commands."""
    revoke = commands.add_parser(
        "revoke", help="revoke jobs: those not started yet are skipped by every worker"
    )
    revoke.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    revoke.add_argument("-A", "--app", metavar="MODULE[:APP]", help="app whose settings to use")
    revoke.add_argument(
        "--ttl", type=float, metavar="SECONDS", help="how long it stays in force [revoke_ttl]"
    )
    revoke.add_argument(
        "--terminate",
        action="store_true",
        help="also end a running one, like a hard time limit (its thread is abandoned)",
    )
    revoke.set_defaults(command=run)


def run(options: argparse.Namespace) -> int:
    """Write the revocations and wait for the broker's acknowledgement."""
    from kafka_jobs.app import App
    from kafka_jobs.loader import load_app

    app = load_app(options.app) if options.app else App()
    count = app.revoke(options.job_ids, options.ttl, terminate=options.terminate)
    ended = " (running ones are ended)" if options.terminate else ""
    print(f"revoked {count} job(s) in {app.settings.revoke_topic}{ended}", flush=True)
    return 0
