"""The process pool: sync jobs run in child processes, for CPU-bound work.

The listener stays the only owner of the Consumer; worker threads decode the
records and hand each call (task name, arguments, job context) to a child over
a pipe, then wait for its outcome. One child per worker thread, so the pool
runs as many jobs at once as the thread pool would. A child that dies (kill -9,
segfault, `os._exit`, the OOM killer) fails only the job it was running, with
`WorkerProcessDied`, which follows the job's retry policy; it is replaced at once.

Children are started with the "spawn" method (librdkafka's threads do not
survive fork) and import the app the way `kafka-jobs worker -A` does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import signal
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import dill

from kafka_jobs.errors import ConfigurationError, KafkaJobsError, Retry, SoftTimeLimitExceeded

if TYPE_CHECKING:
    from kafka_jobs.processing.ports import TaskRegistry
    from kafka_jobs.processing.timelimits import Running
    from kafka_jobs.settings import Settings

log = logging.getLogger("kafka_jobs.worker")

_CHECK_INTERVAL = 0.5
"""Seconds between liveness checks of a child while it runs a job."""
_END_CHECK_INTERVAL = 0.1
"""Seconds between checks whether a watched job was ended (then its child is killed)."""


class _Unsendable:
    """A job's return value that could not be sent back from the child process."""

    def __repr__(self) -> str:
        return "<value not sendable from the child process>"

    def __reduce__(self) -> str:
        return "UNSENDABLE"  # one instance, also across processes


UNSENDABLE = _Unsendable()


class WorkerProcessDied(KafkaJobsError):
    """The child process running a job died; the job follows its retry policy."""


class RemoteJobError(KafkaJobsError):
    """A job failed in a child process with an exception that could not be sent back whole."""


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, app_spec: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_child_main, args=(child_end, app_spec), name="kafka-jobs-child", daemon=True
        )
        self.process.start()
        child_end.close()

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self, timeout: float) -> None:
        self.conn.close()  # the child sees EOF and exits
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)


class ProcessPool:
    """`size` child processes; `call` runs a task in an idle one and returns its outcome."""

    def __init__(self, app_spec: str, size: int) -> None:
        self.app_spec = app_spec
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False
        self.replaced = 0

    def start(self) -> None:
        """Start every child (from the thread that outlives them: see `_child_main`)."""
        for _ in range(self.size):
            self._adopt(_Child(self.app_spec))

    def _adopt(self, child: _Child, idle: bool = True) -> None:
        """Count a new child in (and as idle); one started after `close` is stopped."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._all.add(child)
                if idle:
                    self._idle.append(child)
        if closed:
            child.close(1.0)

    def alive(self) -> int:
        """How many children are alive right now."""
        with self._lock:
            return sum(child.alive() for child in self._all)

    def pids(self) -> list[int]:
        """Process ids of the current children."""
        with self._lock:
            return [c.process.pid for c in self._all if c.process.pid is not None]

    def call(
        self,
        task: str,
        args: Sequence[object],
        kwargs: Mapping[str, object],
        context: Mapping[str, object],
        running: Running | None = None,
    ) -> object:
        """Run `task(*args, **kwargs)` in a child: its value; raise what it raised.

        `WorkerProcessDied` when the child died; a value that cannot be sent back
        comes back as `UNSENDABLE`. With `running`, the child raises
        `SoftTimeLimitExceeded` at its soft limit, and once `running` was ended (hard
        limit, terminate) the child is killed and replaced and its error raised.
        """
        with self._lock:
            if self._closed:
                raise KafkaJobsError("the process pool is closed")
            # Worker threads never outnumber children, so one is idle here, unless
            # starting a replacement failed: then start it now.
            child = self._idle.pop() if self._idle else None
        if child is None:
            child = _Child(self.app_spec)
            self._adopt(child, idle=False)
        soft = running.soft_left() if running is not None else None
        try:
            outcome = self._exchange(
                child, dill.dumps((task, args, kwargs, context, soft)), running
            )
        except WorkerProcessDied:
            self._replace(child)
            if running is not None and running.error is not None:
                raise running.error from None
            raise
        finally:  # other errors (arguments that cannot be pickled) leave the child fine
            if child.alive():
                with self._lock:
                    self._idle.append(child)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome[0]

    def _exchange(
        self, child: _Child, request: bytes, running: Running | None
    ) -> BaseException | tuple[object]:
        reply: bytes | None = None
        interval = _CHECK_INTERVAL if running is None else _END_CHECK_INTERVAL
        try:
            child.conn.send_bytes(request)
            while True:
                if child.conn.poll(interval):  # a reply, or EOF when it died
                    reply = child.conn.recv_bytes()
                    break
                if running is not None and running.ended:  # hard limit or terminate
                    log.warning("killing worker process %s: %s", child.process.pid, running.error)
                    child.process.kill()
                    break
                if not child.alive():  # dead, its pipe perhaps held open by a grandchild
                    break
        except (EOFError, OSError):
            reply = None
        if reply is None:
            child.process.join(1.0)
            raise WorkerProcessDied(
                f"worker process {child.process.pid} died while running the job"
                f" ({_describe_exit(child.process.exitcode)})"
            )
        return decode_reply(reply, child.process.pid)

    def _replace(self, dead: _Child) -> None:
        with self._lock:
            self._all.discard(dead)
            closed = self._closed
        dead.close(1.0)
        if closed:
            return
        log.warning(
            "worker process %s died (%s): starting a new one",
            dead.process.pid,
            _describe_exit(dead.process.exitcode),
        )
        self.replaced += 1
        self._adopt(_Child(self.app_spec))

    def close(self, timeout: float = 5.0) -> None:
        """Stop every child (they finish nothing more)."""
        with self._lock:
            self._closed = True
            children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            child.close(timeout)


def decode_reply(reply: bytes, pid: int | None) -> BaseException | tuple[object]:
    """A child's reply: `(value,)`, or the exception it raised, noted with its traceback there."""
    kind, payload, name, message, remote_traceback, exc_traceback = dill.loads(reply)
    if kind == "ok":
        return (payload,)
    try:
        sent = dill.loads(payload) if payload is not None else None
    except Exception:  # e.g. its class cannot be imported here
        sent = None
    error = sent if isinstance(sent, BaseException) else RemoteJobError(f"{name}: {message}")
    error.add_note(f"raised in worker process {pid}:\n{remote_traceback}")
    if isinstance(error, Retry) and error.exc is not None:
        # Its `exc` is what a dead letter shows once no attempt is left: without the
        # note it would say nothing of where the job failed (tracebacks stay behind).
        error.exc.add_note(f"raised in worker process {pid}:\n{exc_traceback}")
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def app_spec_for(registry: TaskRegistry, given: str | None) -> str:
    """The `-A` spec children import: the one given, else the module of the registry's tasks."""
    if given:
        return given
    modules: set[str] = {task.fn.__module__ for task in registry.tasks.values()}
    modules.discard("__main__")
    if len(modules) != 1:
        raise ConfigurationError(
            "the process pool needs to know which module registers the jobs: pass"
            " app_spec='pkg.module[:app]' (the CLI passes -A)"
        )
    return modules.pop()


# --- in the child -------------------------------------------------------------


def _child_main(conn: Connection, app_spec: str) -> None:
    """Serve calls until the parent closes the pipe."""
    from kafka_jobs.broker import die_with_parent
    from kafka_jobs.loader import load_app

    # SIGKILL: the SIGTERM the parent's group may get is ignored below, on purpose.
    die_with_parent(signal.SIGKILL)
    # Ctrl-C and a SIGTERM to the process group are for the parent, which stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _soft_limit_passed)
    app = load_app(app_spec)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            break
        conn.send_bytes(_run_in_child(app, app.settings, request))
    app.flush(app.settings.delivery_timeout)
    sys.exit(0)


def _run_in_child(tasks: TaskRegistry, settings: Settings, request: bytes) -> bytes:
    """Run one call from the parent; the reply says how it ended."""
    from kafka_jobs.context import JobContext, set_current

    never = threading.Event()

    def no_marks(offset: int) -> None:
        raise KafkaJobsError("mark_as_consumed() is not available in the process pool")

    try:
        task_name, args, kwargs, fields, soft = dill.loads(request)
        context = JobContext(
            **fields,
            partition_revoked=never,
            worker_stopping=never,
            mark_through=no_marks,
            settings=settings,
        )
        set_current(context)
        _soft_limit.start(soft)
        try:
            result = tasks.task(task_name).fn(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        finally:
            _soft_limit.stop()
        for child_job in context.children:  # acknowledged before the job counts as done
            child_job.wait(settings.delivery_timeout)
        try:
            return bytes(dill.dumps(("ok", result, None, None, None, None)))
        except Exception:  # a value dill cannot send: only a kept result misses it
            return bytes(dill.dumps(("ok", UNSENDABLE, None, None, None, None)))
    except BaseException as error:
        return _error_reply(error)
    finally:
        set_current(None)
        sys.stdout.flush()


def _error_reply(error: BaseException) -> bytes:
    """The reply for a job that raised `error`: the exception itself when it can travel."""
    text = "".join(traceback.format_exception(error))
    exc = error.exc if isinstance(error, Retry) else None
    # Where `exc` was raised, if it was; else where the retry was asked.
    exc_text = text
    if exc is not None and exc.__traceback__ is not None:
        exc_text = "".join(traceback.format_exception(exc))
    payload = _sendable(error)
    if payload is None and isinstance(error, Retry) and error.exc is not None:
        # The retry (its countdown, max_retries) must not be lost because its `exc`
        # cannot travel: that one goes as text.
        stand_in = RemoteJobError(f"{type(error.exc).__qualname__}: {error.exc}")
        payload = _sendable(Retry(error.countdown, stand_in, error.max_retries))
    reply = ("error", payload, type(error).__qualname__, str(error), text, exc_text)
    return bytes(dill.dumps(reply))


def _sendable(error: BaseException) -> bytes | None:
    """`error` pickled, if it unpickles too (one whose `__init__` wants more arguments does not)."""
    try:
        payload: bytes = dill.dumps(error)
        dill.loads(payload)
    except Exception:
        return None
    return payload


class _SoftLimit:
    """The child's soft limit: SIGALRM after the seconds left, raised only while a job runs."""

    def __init__(self) -> None:
        self.armed = False
        self.seconds = 0.0

    def start(self, seconds: float | None) -> None:
        if seconds is None:
            return
        self.seconds = seconds
        self.armed = True
        # A limit already passed (the job waited for this child) still raises, at once.
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def stop(self) -> None:
        if self.armed:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)


_soft_limit = _SoftLimit()


def _soft_limit_passed(signum: int, frame: object) -> None:
    if _soft_limit.armed:  # a late signal after the job returned is dropped
        _soft_limit.armed = False
        raise SoftTimeLimitExceeded("the job passed its soft time limit")
