"""librdkafka clients survive fork: a child never destroys the parent's clients.

Destroying a client in a forked child runs librdkafka's destructor without its threads;
that crashed (or blocked about a second) a subprocess started with `preexec_fn`, which
runs the at-fork hooks, from a process holding a producer (found by the broker-outage
chaos test in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys

from celery_bridge import fetched as fetcher_module
from celery_bridge.fetcher import Fetcher
from kafka_jobs import producer as producer_module
from kafka_jobs.broker import free_port
from kafka_jobs.producer import JobProducer


def _nowhere() -> str:
    return f"127.0.0.1:{free_port()}"


def test_a_child_keeps_the_parents_clients_instead_of_destroying_them() -> None:
    producer = JobProducer({"bootstrap.servers": _nowhere()}, delivery_timeout=1.0)
    producer.enqueue("t", "j1", b"{}", None, [])  # a live client with work in it
    fetcher = Fetcher(
        {"bootstrap.servers": _nowhere(), "group.id": "g"},
        grouped=True,
        wake=lambda: None,
        buffer_size=10,
    )
    parent_client, parent_consumer = producer._client, fetcher.client

    def in_the_child() -> None:  # runs after the at-fork hooks, before exec
        if not any(c is parent_client for c in producer_module._inherited_clients):
            raise RuntimeError("the child dropped the parent's producer client")
        if not any(c is parent_consumer for c in fetcher_module._inherited):
            raise RuntimeError("the child dropped the parent's consumer")

    try:
        for _ in range(5):
            done = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=in_the_child)
            assert done.returncode == 0
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
