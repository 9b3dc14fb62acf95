"""The job API over a real broker: what `.delay()` sends is what the job receives."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kafka_jobs import App, DeliveryError, PayloadTooLarge, current_job
from kafka_jobs.broker import free_port
from kafka_jobs.testing import wait_until


def test_delay_round_trip_with_key_kwargs_and_headers(kafka_app, new_topic) -> None:
    topic, other = new_topic(partitions=3), new_topic(partitions=1)
    app = kafka_app(default_topic=topic)
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    @app.job(key="order_id")
    def process_order(order_id: int, note: str = "", *, tags: list[str] | None = None) -> str:
        job = current_job()
        with lock:
            seen.append(
                {
                    "args": (order_id, note, tags),
                    "key": job.key,
                    "topic": job.topic,
                    "attempt": job.attempt,
                    "job_id": job.job_id,
                    "tenant": job.headers.get("tenant"),
                }
            )
        return "done"

    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5  # a direct call still runs inline
    handle = process_order.delay(42, "gift", tags=["a", "b"])
    other_handle = process_order.apply_async(
        args=(43,), key="custom", topic=other, headers={"tenant": "acme"}
    )
    assert handle.wait(10).delivered and other_handle.wait(10).delivered
    app.flush(10)

    with app.worker(topics=[topic, other]):
        assert wait_until(lambda: len(seen) == 2, timeout=30)
    by_id = {s["job_id"]: s for s in seen}
    assert by_id[handle.id] == {
        "args": (42, "gift", ["a", "b"]),
        "key": b"42",
        "topic": topic,
        "attempt": 1,
        "job_id": handle.id,
        "tenant": None,
    }
    assert by_id[other_handle.id]["tenant"] == b"acme"
    assert by_id[other_handle.id]["key"] == b"custom"
    assert by_id[other_handle.id]["topic"] == other


def test_unencodable_argument_and_oversized_payload_fail_at_enqueue(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), max_payload_bytes=1000)

    @app.job
    def store(blob: object, label: str = "") -> None: ...

    with pytest.raises(TypeError, match="positional argument 0 \\(set\\)"):
        store.delay({1, 2})
    with pytest.raises(TypeError, match="argument 'label'"):
        store.delay("ok", label=object())  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge, match="limit is 1000"):
        store.delay("x" * 2000)


def test_unreachable_broker_makes_flush_raise() -> None:
    app = App(bootstrap_servers=f"127.0.0.1:{free_port()}", delivery_timeout=2.0)

    @app.job(topic="nowhere")
    def lost(n: int) -> None: ...

    handles = [lost.delay(n) for n in range(3)]
    with pytest.raises(DeliveryError) as failure:
        app.flush(timeout=20)
    assert sorted(job_id for job_id, _ in failure.value.failures) == sorted(h.id for h in handles)
    with pytest.raises(DeliveryError, match="not delivered"):
        handles[0].wait(1)
