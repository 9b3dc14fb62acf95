"""A producer client that delivers nothing for a whole delivery timeout is replaced."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_jobs import App
from kafka_jobs.broker import EmbeddedBroker
from kafka_jobs.errors import DeliveryError
from kafka_jobs.testing import create_topic


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker only this test uses, so it can be frozen."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


def test_client_that_only_times_out_is_replaced_and_enqueue_recovers(
    own_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    create_topic(own_broker.bootstrap_servers, "frozen", 2)
    app = App(bootstrap_servers=own_broker.bootstrap_servers, delivery_timeout=1.0)

    @app.job(topic="frozen")
    def note(n: int) -> None: ...

    # A fresh broker on a loaded machine may take longer than the 1 s delivery timeout
    # for the first record (metadata, producer id): enqueue until one is delivered.
    for _attempt in range(10):
        try:
            note.delay(0).wait(10)
            break
        except DeliveryError:
            time.sleep(0.5)
    else:
        pytest.fail("the first record was never delivered")
    first_client = app.producer.client
    assert own_broker.process is not None
    # A frozen broker keeps its connections open and answers nothing: every record times
    # out, and the client never sees a fatal error (as after a broker restart that lost
    # the idempotent producer's state).
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    try:
        failed = []
        deadline = time.monotonic() + 8
        while app.producer._client is first_client and time.monotonic() < deadline:
            handle = note.delay(1)
            try:
                handle.wait(3)
            except DeliveryError as exc:
                failed.append(exc)
    finally:
        os.kill(own_broker.process.pid, signal.SIGCONT)
    assert app.producer._client is not first_client, "the stuck client was kept"
    assert len(failed) >= 2  # one timeout window alone does not condemn a client
    assert "nothing delivered for" in caplog.text
    # The thawed broker first works through what queued up meanwhile: a caller enqueues
    # again until the new client delivers (each try bounded by the 1 s delivery timeout).
    for _attempt in range(15):
        try:
            assert note.delay(2).wait(5).delivered
            break
        except DeliveryError:
            time.sleep(0.5)
    else:
        pytest.fail("enqueue did not recover after the broker thawed")
    app.close()
