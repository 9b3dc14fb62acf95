"""Options of `kafka-jobs worker` beyond the basics: probes, the summary line, time limits."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka_jobs.app import App


def add_options(worker: argparse.ArgumentParser) -> None:
    """Add the health, summary and time-limit options to the `worker` command's parser."""
    worker.add_argument(
        "--health-port", type=int, help="serve /live and /ready for probes on this port"
    )
    worker.add_argument(
        "--health-host", default="0.0.0.0", help="address of the health port [0.0.0.0]"
    )
    worker.add_argument(
        "--health-stall",
        type=float,
        metavar="SECONDS",
        help="not live after this long without a poll [max.poll.interval.ms]",
    )
    worker.add_argument(
        "--summary-interval",
        type=float,
        metavar="SECONDS",
        help="log a summary line this often; 0: never (default: KAFKA_JOBS_SUMMARY_INTERVAL or 30)",
    )
    worker.add_argument(
        "--soft-time-limit",
        type=float,
        metavar="SECONDS",
        help="raise SoftTimeLimitExceeded in jobs running this long, unless the job or its"
        " topic sets its own; 0: none (default: KAFKA_JOBS_SOFT_TIME_LIMIT or none)",
    )
    worker.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="end jobs running this long (reason time-limit), unless the job or its topic"
        " sets its own; 0: none (default: KAFKA_JOBS_TIME_LIMIT or none)",
    )


def apply(app: App, options: argparse.Namespace) -> None:
    """Put the summary interval and time limits given on the command line into `app`'s settings.

    Invalid limits (negative, soft not below hard) raise `ConfigurationError`.
    """
    changes: dict[str, float] = {}
    if options.summary_interval is not None:
        changes["summary_interval"] = options.summary_interval
    if options.soft_time_limit is not None:
        changes["soft_time_limit"] = options.soft_time_limit
    if options.time_limit is not None:
        changes["time_limit"] = options.time_limit
    if changes:
        app.settings = app.settings.replace(**changes)
