"""The event loop that runs a worker's `async def` jobs, on its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from kafka_jobs.context import JobContext, _set_current
from kafka_jobs.tracing import JobSpan

log = logging.getLogger("kafka_jobs.worker")


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

    def submit(
        self,
        coroutine: Coroutine[Any, Any, object],
        context: JobContext,
        done: Callable[[concurrent.futures.Future[object]], None],
        span: JobSpan | None = None,
    ) -> None:
        """Start `coroutine` with `context` as its `current_job()`; `done(future)` when it ends.

        `span` (OpenTelemetry) is the current span while it runs.
        """
        self._slots.acquire()

        async def run() -> object:
            _set_current(context)  # the task's own context: invisible to other jobs
            if span is not None:
                span.activate()  # likewise the task's own; dropped with it
            return await coroutine

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)

        def finished(future: concurrent.futures.Future[object]) -> None:
            self._slots.release()
            done(future)

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
