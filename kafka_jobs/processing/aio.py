"""The event loop that runs a worker's `async def` jobs, on its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from kafka_jobs.context import JobContext, set_current
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.instrumentation.tracing import JobSpan

log = logging.getLogger("kafka_jobs.worker")


class JobExited(KafkaJobsError):
    """An async job raised SystemExit or KeyboardInterrupt: a failure of that job only."""


class AsyncRunner:
    """Runs coroutines of async jobs; at most `limit` of them at a time.

    A worker thread hands over a job's coroutine and moves on to other jobs; the
    job comes back to a worker thread (through `done`) when the coroutine ends,
    so failures, retries and offsets are handled exactly as for sync jobs. A
    thread submitting while `limit` coroutines run waits for a slot: that is the
    back-pressure that bounds jobs in flight.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kafka-jobs-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def acquire(self) -> None:
        """Wait for a slot (worker thread); `start` the coroutine then, or `release` it."""
        self._slots.acquire()

    def release(self) -> None:
        """Give back a slot that was not used."""
        self._slots.release()

    def start(
        self,
        coroutine: Coroutine[Any, Any, object],
        context: JobContext,
        done: Callable[[concurrent.futures.Future[object]], None],
        span: JobSpan | None = None,
    ) -> None:
        """Run `coroutine` in the acquired slot, with `context` as its `current_job()`.

        `done(future)` is called when it ends; `span` (OpenTelemetry) is the current
        span while it runs. SystemExit / KeyboardInterrupt from a job are the job's
        failure (`JobExited`): let through, they would stop the loop for every job.
        """

        async def run() -> object:
            set_current(context)  # the task's own context: invisible to other jobs
            if span is not None:
                span.activate()  # likewise the task's own; dropped with it
            try:
                return await coroutine
            except (SystemExit, KeyboardInterrupt) as exc:
                raise JobExited(f"the job raised {exc!r}") from exc

        def finished(future: concurrent.futures.Future[object]) -> None:
            self._slots.release()
            done(future)

        try:
            future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        except BaseException:  # the loop is gone (stopped at shutdown)
            self._slots.release()
            coroutine.close()
            raise
        future.add_done_callback(finished)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs (the shutdown gave up on it) and end the loop thread."""
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                log.warning("cancelling %d async job(s) still running at shutdown", len(tasks))
                await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("async jobs did not end within %.0fs of being cancelled", timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
