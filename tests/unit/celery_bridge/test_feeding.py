"""The prefork pool feeder of kafkajobs:// workers (`celery_bridge.feeding`), on a fake pool.

The slot semaphore stands for billiard's (released when a child finishes a task).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from billiard.pool import LaxBoundedSemaphore
from celery.exceptions import TaskRevokedError

from celery_bridge.feeding import PoolFeeder
from kafka_jobs.testing import wait_until


class _Request:
    def __init__(self, name: str, sent: list[str], outcome: str = "sent") -> None:
        self.id = name
        self._sent = sent
        self._outcome = outcome

    def execute_using_pool(self, pool: Any) -> object | None:
        if self._outcome == "revoked":  # Celery's check when a child is free
            raise TaskRevokedError(self.id)
        if self._outcome == "closed":  # billiard's apply_async on a pool that stopped
            return None
        self._sent.append(self.id)
        return object()


def _feeder(children: int) -> tuple[PoolFeeder, Any]:
    slot = LaxBoundedSemaphore(children)
    worker = SimpleNamespace(pool=SimpleNamespace(_pool=SimpleNamespace(_putlock=slot)))
    feeder = PoolFeeder(worker)
    feeder.start()
    return feeder, slot


def test_put_never_blocks_and_requests_go_in_order_as_children_free() -> None:
    feeder, slot = _feeder(1)
    sent: list[str] = []
    done = threading.Event()

    def put_all() -> None:
        for name in "abc":
            feeder.put(_Request(name, sent))
        done.set()

    threading.Thread(target=put_all).start()
    assert done.wait(5)  # the consumer's thread goes on while the one child is busy
    assert wait_until(lambda: sent == ["a"], 5)
    assert not wait_until(lambda: len(sent) > 1, 0.3)  # b waits for a free child
    slot.release()  # the child finished a
    assert wait_until(lambda: sent == ["a", "b"], 5)
    slot.release()
    assert wait_until(lambda: sent == ["a", "b", "c"], 5)
    feeder.stop()


def test_a_request_not_sent_gives_its_child_back() -> None:
    feeder, _slot = _feeder(1)
    sent: list[str] = []
    feeder.put(_Request("revoked", sent, "revoked"))
    feeder.put(_Request("closed", sent, "closed"))
    feeder.put(_Request("next", sent))
    # Neither of the first two took the only child: the third is sent without a release.
    assert wait_until(lambda: sent == ["next"], 5)
    feeder.stop()


def test_after_stop_a_request_waiting_for_a_child_is_not_sent() -> None:
    feeder, slot = _feeder(1)
    sent: list[str] = []
    feeder.put(_Request("a", sent))
    feeder.put(_Request("b", sent))
    assert wait_until(lambda: sent == ["a"], 5)
    feeder.stop()
    thread = feeder._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    slot.release()
    assert sent == ["a"]  # b stays unacknowledged: redelivered after the restart
