"""One record's run in progress (`Call`), and how a run can end without an outcome."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kafka_jobs.instrumentation import tracing

if TYPE_CHECKING:
    from kafka_jobs.context import JobContext
    from kafka_jobs.wire import Envelope


class _Suspended:
    """`run_record` handed the record's coroutine to the event loop: the job comes back."""


class _Skipped:
    """The record did not run and does not count as done (revoked, or the worker stops)."""


SUSPENDED = _Suspended()
SKIPPED = _Skipped()


class Call:
    """One record's run in progress: what its outcome is judged with."""

    __slots__ = (
        "context",
        "envelope",
        "error",
        "first_failed_ms",
        "generation",
        "keep",
        "runs",
        "span",
        "started",
        "started_ms",
        "value",
    )

    def __init__(
        self, envelope: Envelope, context: JobContext, runs: int, first_failed_ms: int
    ) -> None:
        self.envelope = envelope
        self.context = context
        self.runs = runs
        self.first_failed_ms = first_failed_ms
        self.generation = 0
        self.started = time.perf_counter()
        self.started_ms = 0  # wall clock, for a kept outcome
        self.error: BaseException | None = None
        self.span: tracing.JobSpan | None = None
        self.keep = False  # the outcome goes to the results topic
        self.value: object = None


def coordinates(context: JobContext) -> dict[str, object]:
    """A record's coordinates in job events."""
    return {
        "topic": context.topic,
        "partition": context.partition,
        "offset": context.offset,
        "job_id": context.job_id,
        "task": context.task,
    }


def fields(context: JobContext) -> dict[str, object]:
    """What a child process needs to rebuild `current_job()`."""
    return {
        **coordinates(context),
        "attempt": context.attempt,
        "key": context.key,
        "headers": dict(context.headers),
    }
