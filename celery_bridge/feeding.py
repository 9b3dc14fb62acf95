"""A prefork worker on ``kafkajobs://`` hands tasks to its pool off the consumer's thread.

Celery runs its event loop only on transports that offer one (Redis, RabbitMQ). On
this transport its worker consumes in a plain loop (``synloop``), and with the prefork
pool's put lock (``worker_pool_putlocks``, on by default) that loop blocked in the
pool's put until a child was free: while every child was busy the worker answered no
remote control (``inspect`` got no reply within its second).

Here the put waits on a thread of its own (`PoolFeeder`): the consumer queues each
request and goes on, so remote control is answered at once. The feeder takes the
requests in the order received, waits for a free child (the pool's own slot
semaphore, released when a child finishes a task), and only then sends the request
to the pool, where Celery checks whether it was revoked or has expired: a task that
expires while waiting for a child is not run, as with the put lock on the consumer's
thread or under Celery's event loop. Celery's prefetch count still bounds how many
tasks the worker takes ahead; a waiting task is not acknowledged, so its offset is
not committed and a crash redelivers it.

An app that sets ``worker_pool_putlocks = False`` keeps Celery's own behaviour
(tasks go to the pool when received). The threads and solo pools never blocked there.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from celery_bridge import steps

log = logging.getLogger(__name__)

__all__ = ["PoolFeeder", "install"]

# How often a feeder waiting for a free child looks whether it should stop.
_STOP_CHECK = 0.5


class PoolFeeder:
    """Sends a worker's task requests to its prefork pool as children become free."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, request: Any) -> None:
        """Celery's ``process_task`` on the consumer's thread: queue `request`, never block."""
        self.start()
        self._requests.put(request)

    def stop(self) -> None:
        """Stop feeding; requests not yet sent stay unacknowledged (redelivered later)."""
        self._stopping.set()
        self._requests.put(None)

    def start(self) -> None:
        """Start the feeding thread (once; the worker's bootstep starts it after the pool)."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="celery-bridge-pool-feeder", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            request = self._requests.get()
            if request is None:
                return
            try:
                self._feed(request)
            except Exception:  # the feeder must outlive one bad request
                log.exception("task %s could not be sent to the pool", getattr(request, "id", "?"))

    def _slot(self) -> Any:
        """The pool's semaphore of free children (billiard releases it as a child finishes)."""
        return self.worker.pool._pool._putlock

    def _feed(self, request: Any) -> None:
        from celery.exceptions import TaskRevokedError  # type: ignore[import-untyped]

        slot = self._slot()
        while not slot.acquire(timeout=_STOP_CHECK):
            if self._stopping.is_set():
                return  # not acknowledged: redelivered after the restart
        sent = False
        try:
            # Celery's own put (WorkController._process_task) without its put lock: the
            # revoked / expired check runs now that a child is free.
            sent = request.execute_using_pool(self.worker.pool) is not None
        except TaskRevokedError:
            pass
        finally:
            if not sent:
                slot.release()


def _on_worker_init(sender: Any, transport_cls: type, **_: Any) -> None:
    """Celery's ``worker_init``: route prefork puts of a kafkajobs:// worker through a feeder."""
    conninfo = getattr(sender, "_conninfo", None)
    if conninfo is None or getattr(sender, "use_eventloop", True) or not sender.pool_putlocks:
        return
    if not isinstance(conninfo.transport, transport_cls):
        return
    from celery import concurrency  # type: ignore[import-untyped]

    pool_cls = concurrency.get_implementation(sender.pool_cls)
    if not getattr(pool_cls, "uses_semaphore", False):
        return  # only the prefork pool blocks in its put
    sender.pool_putlocks = False  # the pool's put never blocks: the feeder waits instead
    steps.add_after_pool(sender, "celery_bridge.feeding.FeederStep", _feeder)


def _feeder(worker: Any) -> PoolFeeder:
    """The feeder step's object: replaces the worker's ``process_task`` with its put."""
    # Made before the Consumer step, which reads process_task; the step's start and
    # stop (after the Pool's, before it stops) are the feeder's.
    feeder = PoolFeeder(worker)
    worker.process_task = feeder.put
    return feeder


def install(transport_cls: type) -> None:
    """Connect the ``worker_init`` hook for workers on `transport_cls` (nothing without Celery)."""
    steps.on_worker_init(transport_cls, _on_worker_init)
