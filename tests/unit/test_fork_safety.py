"""librdkafka clients survive fork: a child never destroys the parent's clients.

Destroying a client in a forked child runs librdkafka's destructor without its threads;
that crashed a subprocess started with `preexec_fn` (which runs the at-fork hooks) from a
process holding a producer (found by the broker-outage chaos test).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from celery_bridge.fetcher import Fetcher
from kafka_jobs.broker import free_port
from kafka_jobs.producer import JobProducer


def _nowhere() -> str:
    return f"127.0.0.1:{free_port()}"


def test_subprocesses_with_preexec_fn_do_not_crash_with_live_clients() -> None:
    producer = JobProducer({"bootstrap.servers": _nowhere()}, delivery_timeout=1.0)
    producer.enqueue("t", "j1", b"{}", None, [])  # a live client with work in it
    fetcher = Fetcher(
        {"bootstrap.servers": _nowhere(), "group.id": "g"},
        grouped=True,
        wake=lambda: None,
        buffer_size=10,
    )
    try:
        took = []
        for _ in range(15):
            began = time.monotonic()
            done = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=lambda: None)
            took.append(time.monotonic() - began)
            assert done.returncode == 0
        # A child that destroys the inherited clients blocks about a second in librdkafka
        # (or crashes); one that keeps them starts Python and exits at once.
        assert statistics.median(took) < 0.5, took
    finally:
        fetcher.close(5)
        producer._client.purge()  # type: ignore[union-attr]


def test_a_forked_child_gets_its_own_producer_client() -> None:
    producer = JobProducer({"bootstrap.servers": _nowhere()}, delivery_timeout=1.0)
    parent_client = producer.client
    pid = os.fork()
    if pid == 0:  # the child: must not crash, must not reuse the parent's client
        code = 0 if producer.client is not parent_client else 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
