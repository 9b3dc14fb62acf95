"""Time limits of running jobs, and ending a running job early (limits, `terminate=True`).

A soft limit raises `SoftTimeLimitExceeded` inside the job so it can clean up;
a hard limit ends it. One `Watchdog` thread per worker watches every job run
(`Running`) and acts at its deadlines; `terminate` ends runs by job id. How a
run is interrupted or ended depends on where it runs (the executor sets it):

- a thread job gets the soft limit as an asynchronous exception on its thread
  (`PyThreadState_SetAsyncExc`), which Python raises at the next bytecode, not
  inside C code; at the hard limit its thread is abandoned (never killed: Python
  cannot) and a new worker thread takes the job over;
- a process-pool child raises the soft limit itself (SIGALRM, see `processes`);
  the parent kills it at the hard limit;
- an async job is cancelled, the cancellation turned into the soft limit's
  exception inside the coroutine, or into the end of the job at the hard limit.
"""

from __future__ import annotations

import ctypes
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from kafka_jobs.deadletter import JOB_FAILED, TIME_LIMIT
from kafka_jobs.errors import (
    ConfigurationError,
    JobTerminated,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from kafka_jobs.processing.calls import coordinates

if TYPE_CHECKING:
    from kafka_jobs.context import JobContext
    from kafka_jobs.instrumentation.events import EventBus

log = logging.getLogger("kafka_jobs.worker")

Limit = Literal["soft", "hard"]
TERMINATED = "terminated"
"""The reason of a job ended by a revocation with ``terminate=True`` (never dead-lettered)."""


def failure_reason(error: BaseException) -> str:
    """The reason a run that raised `error` failed: time-limit, terminated or job-failed."""
    if isinstance(error, TimeLimitExceeded):
        return TIME_LIMIT
    if isinstance(error, JobTerminated):
        return TERMINATED
    return JOB_FAILED


def check_limits(soft: float | None, hard: float | None, where: str) -> None:
    """Refuse invalid limits: negative, not finite, or a soft limit not below the hard one.

    None: not given (inherited); 0: no limit.
    """
    for name, value in (("soft_time_limit", soft), ("time_limit", hard)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where}: {name} must be a number of seconds, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(
                f"{where}: {name} must be a finite number of seconds >= 0 (0: none), not {value!r}"
            )
    if soft and hard and soft >= hard:
        raise ConfigurationError(
            f"{where}: soft_time_limit ({soft:g}s) must be below time_limit ({hard:g}s):"
            " the soft limit is the job's warning before the hard one ends it"
        )


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """A job's soft and hard time limits in seconds (None: inherited; 0: none)."""

    soft: float | None = None
    hard: float | None = None

    def __post_init__(self) -> None:
        check_limits(self.soft, self.hard, "time limits")

    @classmethod
    def of(cls, soft: float | None, hard: float | None, where: str) -> TimeLimits | None:
        """Checked limits from keywords (`where` names them in errors); None when neither given."""
        check_limits(soft, hard, where)
        return None if soft is None and hard is None else cls(soft, hard)

    @property
    def any(self) -> bool:
        """True when a soft or hard limit applies."""
        return bool(self.soft or self.hard)


def _effective(soft: float | None, hard: float | None) -> tuple[float | None, float | None]:
    """Limits combined from several levels: a soft limit not below the hard one never acts."""
    if soft and hard and soft >= hard:
        return None, hard
    return soft, hard


def resolve(*levels: TimeLimits | None) -> TimeLimits:
    """The limits in force: the first level (job, then topic, then app) giving each wins."""
    soft: float | None = None
    hard: float | None = None
    for level in levels:
        if level is None:
            continue
        if soft is None:
            soft = level.soft
        if hard is None:
            hard = level.hard
    return TimeLimits(*_effective(soft or None, hard or None))


class Abandoned(BaseException):  # not an error: a control-flow signal
    """Raised on a worker thread whose job was taken over after its hard limit: it ends."""


_RUNNING, _FINISHED, _ENDED = 0, 1, 2


RunKind = Literal["thread", "process", "async"]


class Running:
    """One job run the watchdog watches.

    kind: where it runs, which says how the soft limit reaches it: "thread" (an
    exception raised in `thread_id`), "process" (the child raises it itself) or
    "async" (`handle.interrupt()`). `job`, `call` and `handle` are the executor's,
    for the `Watchdog.on_end` callback.
    """

    __slots__ = (
        "abandoned",
        "call",
        "context",
        "error",
        "handle",
        "hard_at",
        "job",
        "job_id",
        "kind",
        "soft_at",
        "soft_sent",
        "state",
        "thread_id",
    )

    def __init__(
        self,
        job_id: str,
        limits: TimeLimits | None = None,
        kind: RunKind = "thread",
        now: float | None = None,
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        if limits is None:  # most runs: no clock read
            self.soft_at: float | None = None
            self.hard_at: float | None = None
        else:
            start = time.monotonic() if now is None else now
            self.soft_at = start + limits.soft if limits.soft else None
            self.hard_at = start + limits.hard if limits.hard else None
        self.state = _RUNNING
        self.error: BaseException | None = None
        self.thread_id = 0
        self.soft_sent = False
        self.abandoned = False  # a thread job whose thread was replaced
        self.context: JobContext | None = None  # for the events' coordinates
        self.job: object = None
        self.call: object = None
        self.handle: Interruptible | None = None

    @property
    def ended(self) -> bool:
        """True once a hard limit or `terminate` ended it."""
        return self.state == _ENDED

    def soft_left(self) -> float | None:
        """Seconds left until the soft limit (None: it has none)."""
        return None if self.soft_at is None else self.soft_at - time.monotonic()


class Interruptible(Protocol):
    """An async run's handle (`aio.AsyncJob`)."""

    def interrupt(self) -> None:
        """Raise `SoftTimeLimitExceeded` inside it."""

    def cancel(self) -> None:
        """Cancel it."""


def _set_async_exc(thread_id: int, kind: type[BaseException] | None) -> None:
    # `None` clears an exception sent but not raised yet.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind is not None else None
    )


class Deadlines:
    """The pending soft and hard deadlines of runs, earliest first (no threads, no clock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Limit, Running]] = []
        self._seq = 0

    def add(self, running: Running) -> None:
        """Watch `running`'s deadlines."""
        for at, limit in ((running.soft_at, "soft"), (running.hard_at, "hard")):
            if at is not None:
                self._seq += 1
                heapq.heappush(self._heap, (at, self._seq, limit, running))  # type: ignore[misc]

    def next_at(self) -> float | None:
        """When the earliest deadline of a run still running falls (None: none left)."""
        heap = self._heap
        while heap and heap[0][3].state != _RUNNING:
            heapq.heappop(heap)  # finished or ended: forget its deadlines
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[tuple[Limit, Running]]:
        """The deadlines passed at `now` of runs still running, in order; removed from here."""
        passed: list[tuple[Limit, Running]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, limit, running = heapq.heappop(heap)
            if running.state == _RUNNING:
                passed.append((limit, running))
        return passed

    def __len__(self) -> int:
        return len(self._heap)


class Watchdog:
    """Watches every running job of a worker: acts at time limits, ends runs on `terminate`.

    Thread-safe. Its thread starts with the first run that has a limit.
    """

    def __init__(
        self,
        events: EventBus | None = None,
        on_end: Callable[[Running, BaseException], None] | None = None,
    ) -> None:
        self.on_end = on_end
        """Told (on the thread that ended it) of every run ended, with its error."""
        self.abandon_threads = False
        """Thread jobs ended are abandoned (`on_end` hands their job to a new thread)."""
        self._cond = threading.Condition(threading.Lock())
        self._deadlines = Deadlines()
        # Every run in progress; set.add / discard and list(set) are atomic (GIL):
        # the hot path of a run without limits takes the lock only in `finish`.
        self._runs: set[Running] = set()
        self._lock = self._cond
        self._events = events
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, running: Running) -> None:
        """Watch a run that just started (an async one may have finished already)."""
        if running.soft_at is None and running.hard_at is None and running.kind != "async":
            self._runs.add(running)  # finished only after this, on this thread
            return
        with self._cond:
            if running.state != _RUNNING:
                return
            self._runs.add(running)
            if running.soft_at is None and running.hard_at is None:
                return
            self._deadlines.add(running)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._watch, name="kafka-jobs-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def finish(self, running: Running) -> BaseException | None:
        """The run returned: None, or the error it was ended with meanwhile (it is over)."""
        with self._lock:
            state = running.state
            if state == _RUNNING:
                running.state = _FINISHED  # first: nothing is sent to it any more
                if running.soft_sent and running.kind == "thread":
                    _set_async_exc(running.thread_id, None)  # sent but perhaps not raised
        self._runs.discard(running)
        return running.error if state == _ENDED else None

    def terminate(self, job_id: str) -> int:
        """End the runs of `job_id` (`JobTerminated`); how many there were."""
        runs = [running for running in list(self._runs) if running.job_id == job_id]
        ended = 0
        for running in runs:
            if self._end(running, JobTerminated(f"job {job_id} was terminated while it ran")):
                ended += 1
        return ended

    def running(self) -> int:
        """How many runs are watched right now."""
        return len(self._runs)

    def close(self) -> None:
        """Stop the watchdog thread (runs still going keep going, unwatched)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(2.0)

    def fire(self, limit: Limit, running: Running) -> None:
        """Act on a passed deadline (the watchdog thread; tests call it directly)."""
        if limit == "soft":
            with self._cond:
                if running.state != _RUNNING:
                    return
                # Under the lock: `finish` then knows whether to clear what was sent.
                try:
                    if running.kind == "thread":
                        _set_async_exc(running.thread_id, SoftTimeLimitExceeded)
                    elif running.kind == "async" and running.handle is not None:
                        running.handle.interrupt()
                    # "process": the child raises it itself at its own timer
                except Exception:  # e.g. the event loop is gone: the hard limit remains
                    log.exception("soft time limit of job %s not delivered", running.job_id)
                running.soft_sent = True
            self._emit(running, "soft")
            return
        error = TimeLimitExceeded(
            f"job {running.job_id} passed its time limit and was ended"
            + (" (its thread is abandoned)" if running.kind == "thread" else "")
        )
        if self._end(running, error):
            self._emit(running, "hard")

    def _end(self, running: Running, error: BaseException) -> bool:
        with self._cond:
            if running.state != _RUNNING:
                return False
            running.state = _ENDED
            running.error = error
            # Decided here, under the lock `finish` takes: never both it and a new thread.
            running.abandoned = running.kind == "thread" and self.abandon_threads
        self._runs.discard(running)
        if self.on_end is not None:
            try:
                self.on_end(running, error)
            except Exception:
                log.exception("ending job %s failed", running.job_id)
        return True

    def _emit(self, running: Running, limit: Limit) -> None:
        if self._events is not None and running.context is not None:
            self._events.emit("job.time_limited", **coordinates(running.context), limit=limit)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    next_at = self._deadlines.next_at()
                    now = time.monotonic()
                    if next_at is not None and next_at <= now:
                        due = self._deadlines.due(now)
                        break
                    self._cond.wait(None if next_at is None else next_at - now)
            for limit, running in due:
                try:
                    self.fire(limit, running)
                except Exception:  # the watchdog must outlive anything
                    log.exception("time limit of job %s: internal error", running.job_id)
