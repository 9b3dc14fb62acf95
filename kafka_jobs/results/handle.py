"""A job's result as its caller sees it: state, value, or the job's exception."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from kafka_jobs.errors import ResultUnavailable
from kafka_jobs.results.outcome import Outcome, State
from kafka_jobs.results.reader import ResultsReader, release_reader, shared_reader
from kafka_jobs.wire import now_ms

if TYPE_CHECKING:
    from kafka_jobs.settings import KafkaConfig, Settings


class JobResult:
    """The outcome of one job that keeps its result (``keep_result=True``).

    Every `JobResult` of a process shares one reader of the results topic, looked
    up through `reader` on first use (not at enqueue: most handles are never read).
    `since_ms`: the job's enqueue time (results are looked for from then on);
    None searches the whole retained topic. `secret`: the signing secret that
    verifies values of jobs serialized with dill.
    """

    def __init__(
        self,
        job_id: str,
        reader: Callable[[], ResultsReader],
        since_ms: int | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.id = job_id
        self._reader_of = reader
        self._since_ms = 0 if since_ms is None else since_ms
        self._secret = secret

    @functools.cached_property
    def _reader(self) -> ResultsReader:
        return self._reader_of()

    def outcome(self) -> Outcome | None:
        """The job's latest outcome in the results topic; None while nothing is written.

        It has the state, attempts, start and end times, and the value or the error.
        """
        return self._reader.current(self.id, self._since_ms)

    @property
    def state(self) -> State:
        """Pending (nothing written yet), started, retrying, succeeded, failed or dead-lettered."""
        outcome = self.outcome()
        return "pending" if outcome is None else outcome.state

    def ready(self) -> bool:
        """True once the job succeeded, failed or was dead-lettered."""
        return self.state not in ("pending", "started", "retrying")

    def get(self, timeout: float | None = None) -> object:
        """The job's return value, waiting up to `timeout` seconds (None: no limit).

        Raises the job's own exception when its class can be built here, else
        `JobFailed` (remote class, message, traceback); `ResultUnavailable` when no
        outcome came within `timeout` (unknown or expired id, or still running);
        `BadSignature` for a dill value this process's secret does not verify.
        """
        outcome = self._reader.wait(self.id, self._since_ms, timeout)
        if outcome is None:
            raise ResultUnavailable(f"no result for job {self.id} within {timeout}s")
        if outcome.state == "succeeded":
            return outcome.value_for(self._secret)
        if outcome.error is None:  # a writer that recorded no error
            raise ResultUnavailable(f"job {self.id} ended {outcome.state} without an error")
        raise outcome.error.rebuild()

    async def aget(self, timeout: float | None = None) -> object:
        """`get` for coroutines: waits on a thread, not on the event loop."""
        return await asyncio.to_thread(self.get, timeout)


READER_FETCH_WAIT_MS = 20
"""The results reader's fetch wait: a broker answers one connection's requests in
order, so every end-offset query of a read waits behind an idle fetch for this long
(librdkafka's default, 500 ms, made each `get()` take about 1.5 s)."""


def reader_config(settings: Settings) -> KafkaConfig:
    """The configuration of the process's results reader for `settings`."""
    return {**settings.consumer_settings(), "fetch.wait.max.ms": READER_FETCH_WAIT_MS}


def reader_of(settings: Settings) -> ResultsReader:
    """The process's reader of the results topic of `settings`."""
    return shared_reader(reader_config(settings), settings.results_topic)


def release(settings: Settings) -> None:
    """Close the process's results reader of `settings`, if one was opened."""
    release_reader(reader_config(settings), settings.results_topic)


def for_enqueued(job_id: str, settings: Settings) -> JobResult:
    """The result handle of a job enqueued now with `settings`."""
    return JobResult(job_id, functools.partial(reader_of, settings), now_ms(), _secret(settings))


def _secret(settings: Settings) -> bytes | None:
    return settings.signing_secret.encode() if settings.signing_secret else None
