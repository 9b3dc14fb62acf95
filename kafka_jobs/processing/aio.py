"""The event loop that runs a worker's `async def` jobs, on its own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from kafka_jobs.context import JobContext, set_current
from kafka_jobs.errors import KafkaJobsError, SoftTimeLimitExceeded
from kafka_jobs.instrumentation.tracing import JobSpan

log = logging.getLogger("kafka_jobs.worker")


class CancelledJob(KafkaJobsError):
    """An async job's coroutine was cancelled (by the worker's shutdown, or by itself)."""


async def awaiting(awaitable: Awaitable[object]) -> object:
    """A coroutine awaiting `awaitable` (an async job behind a sync decorator)."""
    return await awaitable


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
    ) -> AsyncJob:
        """Run `coroutine` in the acquired slot, with `context` as its `current_job()`.

        `done(future)` is called when it ends; `span` (OpenTelemetry) is the current
        span while it runs. SystemExit / KeyboardInterrupt from a job are the job's
        failure (`JobExited`): let through, they would stop the loop for every job.
        Returns its handle, for time limits and terminate=True.
        """
        handle = AsyncJob(self._loop, coroutine)

        async def run() -> object:
            set_current(context)  # the task's own context: invisible to other jobs
            if span is not None:
                span.activate()  # likewise the task's own; dropped with it
            handle.task = asyncio.current_task()
            try:
                return await handle
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
        return handle

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


class AsyncJob:
    """An async job's coroutine, awaited through this so a cancellation can become its soft limit.

    `interrupt()` cancels the task running it and the cancellation reaches the
    coroutine as `SoftTimeLimitExceeded` (the task is un-cancelled: it goes on,
    e.g. to clean up); `cancel()` cancels it. Both from any thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, object]
    ) -> None:
        self._loop = loop
        self._coroutine = coroutine
        self._soft = False
        self.task: asyncio.Task[Any] | None = None

    def interrupt(self) -> None:
        """Raise `SoftTimeLimitExceeded` inside the coroutine at its current await."""
        self._loop.call_soon_threadsafe(self._cancel, True)

    def cancel(self) -> None:
        """Cancel the coroutine."""
        self._loop.call_soon_threadsafe(self._cancel, False)

    def _cancel(self, soft: bool) -> None:
        task = self.task
        if task is not None and not task.done():
            self._soft = soft
            task.cancel()

    def __await__(self) -> Generator[Any, Any, object]:
        # Drives the coroutine as `await` would, to turn a soft cancellation around.
        coroutine = self._coroutine
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is not None:
                    error, thrown = thrown, None
                    step = coroutine.throw(error)
                else:
                    step = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield step
            except GeneratorExit:
                coroutine.close()
                raise
            except asyncio.CancelledError as cancelled:
                thrown = cancelled
                if self._soft:
                    self._soft = False
                    if self.task is not None:
                        self.task.uncancel()  # the job goes on after its cleanup
                    thrown = SoftTimeLimitExceeded("the job passed its soft time limit")
            except BaseException as error:
                thrown = error
