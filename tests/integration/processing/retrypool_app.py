"""Jobs that ask to be retried from a process-pool child; imported by the test and the children.

Configured from the environment the test sets before importing it (children inherit
it): RETRYPOOL_TOPIC (the jobs' topic), EFFECTS_TOPIC and KAFKA_BOOTSTRAP_SERVERS
(every run writes an effect there: its attempt, pid and start time).
"""

from __future__ import annotations

import os

from kafka_jobs import App, Retry, current_job
from tests.integration.effects import Effects

app = App(default_topic=os.environ.get("RETRYPOOL_TOPIC", "retrypool"))
_effects: list[Effects] = []


def note_run(label: str) -> int:
    """Write this run's effect (acknowledged); its attempt number."""
    if not _effects:  # one producer per process, made where the job runs
        _effects.append(Effects.from_env())
    attempt = current_job().attempt
    _effects[0].write(label, attempt=attempt, pid=os.getpid())
    return attempt


def ask_retry(
    via: str, countdown: float, max_retries: int | None = None, exc: BaseException | None = None
) -> None:
    """Ask for a retry either way a job can: raise `Retry`, or `current_job().retry()`."""
    if via == "raise":
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)
    current_job().retry(countdown=countdown, exc=exc, max_retries=max_retries)


@app.job(name="retrypool.once", keep_result=True)
def once(countdown: float, via: str) -> int:
    """The first attempt asks to be retried in `countdown` s; the next one returns its attempt."""
    attempt = note_run("once")
    if attempt == 1:
        ask_retry(via, countdown)
    return attempt


class NoRoundTrip(Exception):
    """Pickles, but does not unpickle: its `__init__` wants two arguments, `args` holds one."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


@app.job(name="retrypool.always", retries=5)
def always(countdown: float, via: str, max_retries: int, exc: str | None) -> None:
    """Every attempt asks to be retried, until `max_retries` retries are spent.

    exc: None, "no-round-trip" (an error that cannot travel back), else a LookupError's text.
    """
    note_run("always")
    error: BaseException | None = None
    if exc == "no-round-trip":
        error = NoRoundTrip(1, 2)
    elif exc is not None:
        error = LookupError(exc)
    ask_retry(via, countdown, max_retries, error)
