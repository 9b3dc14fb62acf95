"""The broker goes away and comes back: enqueue errors surface in time, workers reconnect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_jobs import App
from kafka_jobs.broker import EmbeddedBroker
from kafka_jobs.errors import DeliveryError
from kafka_jobs.testing import BrokerInfo, create_topic, wait_until
from tests import ledger
from tests.chaos.conftest import SCALE, Cluster

JOBS = int(1_000 * SCALE)
DELIVERY_TIMEOUT = 5.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker only this test uses, so it can be stopped and started again."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


def _producer(broker: EmbeddedBroker, topic: str) -> tuple[App, object]:
    app = App(
        bootstrap_servers=broker.bootstrap_servers,
        default_topic=topic,
        delivery_timeout=DELIVERY_TIMEOUT,
    )

    @app.job(key="key", name="chaos.record")
    def record(seq: int, key: str) -> None:
        raise AssertionError("runs in the worker processes only")

    return app, record


def test_workers_ride_out_a_broker_outage(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    chaos = Cluster(BrokerInfo(own_broker.bootstrap_servers, own_broker), tmp_path)
    try:
        workers = [chaos.start(), chaos.start()]
        app, record = _producer(own_broker, chaos.topic)
        for seq in range(JOBS):
            record.delay(seq, f"k{seq % 50}")  # type: ignore[attr-defined]
        app.flush(30)
        assert wait_until(lambda: ledger.distinct(chaos.ledger) >= JOBS, 90)

        own_broker.stop()  # the outage: every record the broker held is gone with it
        began = time.monotonic()
        for seq in range(JOBS, JOBS + 200):
            record.delay(seq, "outage")  # type: ignore[attr-defined]
        with pytest.raises(DeliveryError) as failed:
            app.flush(DELIVERY_TIMEOUT * 3)
        waited = time.monotonic() - began
        assert waited <= DELIVERY_TIMEOUT + 3, f"the failure took {waited:.1f}s to surface"
        assert len(failed.value.failures) == 200  # every job that was not sent is named
        time.sleep(5)  # workers keep running without a broker
        assert all(w.poll() is None for w in workers)

        own_broker.start()  # same port; empty (memory-only): recreate the topic
        create_topic(own_broker.bootstrap_servers, chaos.topic, 6)
        after = JOBS + 1000
        pending = list(range(after, after + JOBS))
        for _attempt in range(6):
            # The first flush may fail: the idempotent producer's id died with the broker's
            # state (fatal UNKNOWN_PRODUCER_ID), so those jobs are reported as not delivered
            # and the client is replaced. Enqueue them again, as a caller would.
            handles = {record.delay(seq, f"k{seq % 50}").id: seq for seq in pending}  # type: ignore[attr-defined]
            try:
                app.flush(30)
                break
            except DeliveryError as exc:
                pending = sorted(handles[job_id] for job_id, _ in exc.failures if job_id in handles)
                # Or the client waits for good on producer state the broker lost, without
                # a fatal error (seen in CI): after a whole delivery timeout of nothing
                # but timeouts it is replaced too (tests/integration/test_producer_recovery.py).
                time.sleep(1.0)
        else:
            pytest.fail("enqueue did not recover after the broker came back")
        app.close()

        def caught_up() -> bool:
            runs = {r.seq for r in ledger.executions(chaos.ledger)}
            return set(range(after, after + JOBS)) <= runs

        assert wait_until(caught_up, 120 * SCALE, interval=1.0), "workers did not reconnect"
        assert all(w.poll() is None for w in workers), "a worker had to be restarted"
        runs = {r.seq for r in ledger.executions(chaos.ledger)}
        assert set(range(JOBS)) <= runs
        assert not runs & set(range(JOBS, JOBS + 200))  # never sent, never run
        print(f"outage: failure surfaced after {waited:.1f}s; {len(runs)} jobs ran, no restart")
    finally:
        chaos.close()
