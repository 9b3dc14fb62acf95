"""`kafka-jobs result JOB_ID`: one job's outcome, read from the results topic.

Exit codes, for scripts: 0 the job succeeded; 1 it failed or was dead-lettered;
2 no final outcome (unknown or expired id, a job that does not keep its result,
or one still pending, started or retrying when the time was up).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING

from kafka_jobs.errors import KafkaJobsError

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.results.outcome import Outcome

SUCCEEDED, FAILED, NO_RESULT = 0, 1, 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `result` command to the `kafka-jobs` parser's commands."""
    result = commands.add_parser(
        "result",
        help="one job's outcome: state, attempts, times, value or error"
        " (exit 0 succeeded, 1 failed, 2 no final outcome)",
    )
    result.add_argument("job_id", metavar="JOB_ID")
    result.add_argument("-A", "--app", metavar="MODULE[:APP]", help="app whose settings to use")
    result.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to read the results topic, or with --wait to wait for the end [10]",
    )
    result.add_argument(
        "--wait", action="store_true", help="wait up to --timeout for the job to finish"
    )
    result.set_defaults(command=run)


def run(options: argparse.Namespace) -> int:
    """Print the outcome of `options.job_id`; the exit code says how the job ended."""
    from kafka_jobs.results.handle import reader_of, release

    app = _app_for(options)
    reader = reader_of(app.settings)
    try:
        outcome = None
        if options.wait:
            outcome = reader.wait(options.job_id, 0, options.timeout)
        if outcome is None:  # not waiting, or no end in time: what is there now
            # After a wait the partition is read already: a short look is enough.
            look = min(options.timeout, 5.0) if options.wait else options.timeout
            outcome = reader.current(options.job_id, 0, timeout=max(look, 0.1))
    finally:
        release(app.settings)
    if outcome is None:
        print(f"job      {options.job_id}")
        print("state    pending (no outcome found)", flush=True)
        print(
            f"kafka-jobs: no outcome of {options.job_id} in {app.settings.results_topic}"
            " (an unknown or expired id, a job without keep_result, or not started yet)",
            file=sys.stderr,
        )
        return NO_RESULT
    _print_outcome(outcome, app)
    if outcome.state == "succeeded":
        return SUCCEEDED
    if outcome.state in ("failed", "dead-lettered"):
        return FAILED
    return NO_RESULT


def _app_for(options: argparse.Namespace) -> App:
    from kafka_jobs.app import App
    from kafka_jobs.loader import load_app

    return load_app(options.app) if options.app else App()


def _print_outcome(outcome: Outcome, app: App) -> None:
    started = outcome.started_at_ms  # 0: written by a worker that did not record it
    finished = outcome.finished_at_ms
    lines = [
        ("job", outcome.job_id),
        ("task", outcome.task),
        ("state", outcome.state),
        ("attempts", str(outcome.attempts)),
        ("started", _when(started)),
        ("finished", _when(finished)),
    ]
    if started and finished:
        lines.append(("duration", f"{max(0, finished - started) / 1000:.3f} s"))
    error = outcome.error
    if error is not None:
        lines += [("error", error.type), ("message", error.message)]
    for name, value in lines:
        print(f"{name:<9}{value}")
    if outcome.state == "succeeded":
        print("value:")
        print(_value_text(outcome, app))
    if error is not None:
        print("traceback:")
        print(error.traceback.rstrip("\n") or "(none)")
    print(end="", flush=True)


def _value_text(outcome: Outcome, app: App) -> str:
    """The value as indented JSON; a dill value is unpickled only once its signature verifies."""
    try:
        value = outcome.value_for(app.secret)
    except KafkaJobsError as exc:  # a dill value this secret does not verify
        return f"(not shown: {exc})"
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _when(ms: int) -> str:
    if ms <= 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
