"""The jobs queue between listeners and worker threads; the one place they synchronise."""

from __future__ import annotations

import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from kafka_jobs.processing.jobs import Job


class JobsQueue:
    """FIFO of runnable jobs plus the per-group bookkeeping listeners wait on.

    Thread-safe; one condition variable guards everything.

    - Schedulers call `put`, `lock` and `unlock`.
    - Listeners call `track` when they hand jobs to the scheduler, then
      `wait_unblocked` before polling and `take_finished` to collect results.
    - Worker threads call `get` and `complete` (or `suspend`, when a job waits
      for an async record; the event loop then calls `resume`).
    - `concurrency` and `assignments()` tell schedulers how many threads run jobs
      and which topics and partitions this process owns right now.

    A tracked blocking job holds back its group's polling until it completes,
    whether it is queued, locked, or still buffered inside a scheduler.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: deque[Job] = deque()
        self._locked: set[Job] = set()
        self._busy = 0
        self._blocking: defaultdict[str, int] = defaultdict(int)
        self._unfinished: defaultdict[str, int] = defaultdict(int)
        self._finished: defaultdict[str, list[Job]] = defaultdict(list)
        self._closed = False
        # What the worker tells its scheduler: thread count and current assignments.
        self.concurrency = 1
        self.assignments: Callable[[], dict[str, list[int]]] = dict
        self._put: weakref.WeakSet[Job] = weakref.WeakSet()  # jobs ever put, for put_if_new

    # --- scheduler side -------------------------------------------------

    def put(self, job: Job) -> None:
        """Make a job runnable (an implicit `unlock`)."""
        with self._cond:
            self._put.add(job)
            self._locked.discard(job)
            self._ready.append(job)
            self._cond.notify_all()

    def put_if_new(self, job: Job) -> None:
        """`put` a job unless it was put before (recovering from a failing scheduler)."""
        with self._cond:
            if job in self._put:
                return
            self._put.add(job)
            self._locked.discard(job)
            self._ready.append(job)
            self._cond.notify_all()

    def lock(self, job: Job) -> None:
        """Withhold a job: it waits in the scheduler and, if blocking, holds back polling."""
        with self._cond:
            self._locked.add(job)

    def unlock(self, job: Job) -> None:
        """Release a withheld job without queueing it (the scheduler queues it later)."""
        with self._cond:
            self._locked.discard(job)

    @property
    def statistics(self) -> dict[str, int]:
        """`busy`: jobs running; `enqueued`: jobs ready to run; `waiting`: jobs locked."""
        with self._cond:
            return {"busy": self._busy, "enqueued": len(self._ready), "waiting": len(self._locked)}

    # --- listener side --------------------------------------------------

    def track(self, jobs: Iterable[Job]) -> None:
        """Count jobs a listener is about to schedule."""
        with self._cond:
            for job in jobs:
                self._unfinished[job.group_id] += 1
                if job.blocking:
                    self._blocking[job.group_id] += 1

    def wait_unblocked(self, group_id: str, timeout: float) -> bool:
        """Wait until the group has no unfinished blocking job; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._blocking[group_id] > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_finished(self, group_id: str, timeout: float) -> bool:
        """Wait until every tracked job of the group finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unfinished[group_id] > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def unfinished(self, group_id: str) -> int:
        """How many tracked jobs of the group have not finished."""
        with self._cond:
            return self._unfinished[group_id]

    def take_finished(self, group_id: str) -> list[Job]:
        """The group's jobs that finished since the last call."""
        with self._cond:
            finished = self._finished.pop(group_id, None)
        return finished or []

    def forget(self, group_id: str, jobs: Iterable[Job]) -> None:
        """Stop counting jobs a scheduler dropped on `clear` (recovery reset)."""
        with self._cond:
            for job in jobs:
                if job.finished:
                    continue
                job.finished = True
                self._locked.discard(job)
                if job in self._ready:
                    self._ready.remove(job)
                self._unfinished[group_id] -= 1
                if job.blocking:
                    self._blocking[group_id] -= 1
            self._cond.notify_all()

    # --- worker side ----------------------------------------------------

    def get(self, timeout: float | None = None) -> Job | None:
        """The next runnable job; None on timeout or once the queue is closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            self._busy += 1
            return self._ready.popleft()

    def complete(self, job: Job) -> None:
        """Report a job as finished (worker thread, always, even when it failed)."""
        with self._cond:
            self._busy -= 1
            job.finished = True
            group = job.group_id
            self._unfinished[group] -= 1
            if job.blocking:
                self._blocking[group] -= 1
            self._finished[group].append(job)
            self._cond.notify_all()

    def suspend(self, job: Job) -> None:
        """The job waits for an async record (worker thread): the thread is free, the job is not."""
        with self._cond:
            self._busy -= 1

    def resume(self, job: Job) -> None:
        """A suspended job can go on (any thread): it runs before jobs not started yet."""
        with self._cond:
            self._ready.appendleft(job)
            self._cond.notify_all()

    def close(self) -> None:
        """Let idle worker threads return from `get`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
