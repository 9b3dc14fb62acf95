"""An ordinary Celery project whose broker is Kafka: only the broker URL changed.

Settings come from the environment so the same module serves `celery -A` and the demo:
``CELERY_BROKER_URL`` (default ``kafkajobs://localhost:9092``), ``CELERY_RESULT_BACKEND``
(default a SQLite file) and ``CELERY_GROUP_ID`` (the consumer group of the workers).
"""

from __future__ import annotations

import os
import time

from celery import Celery

import celery_bridge  # noqa: F401  (registers the kafkajobs:// scheme)

app = Celery("shop")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "kafkajobs://localhost:9092"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND", "db+sqlite:///celery-results.sqlite"),
    broker_transport_options={
        "group_id": os.environ.get("CELERY_GROUP_ID", "shop-workers"),
        "topic_partitions": 6,
        # Short session timeouts make group joins quick in development.
        "consumer_config": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    },
    task_routes={"examples.celery_app.tasks.send_receipt": {"queue": "emails"}},
    task_acks_late=True,  # a task is acked when it finished: a crash redelivers it
    worker_prefetch_multiplier=4,
)


@app.task
def charge(order_id: int, cents: int) -> dict[str, int]:
    """Pretend to charge a card."""
    time.sleep(0.001)
    return {"order": order_id, "cents": cents}


@app.task
def send_receipt(charge_result: dict[str, int]) -> str:
    """Runs on the `emails` queue (a second topic)."""
    return f"receipt for order {charge_result['order']}"


@app.task
def total(results: list[dict[str, int]]) -> int:
    """A chord's callback: sum the charges."""
    return sum(r["cents"] for r in results)


@app.task(bind=True, max_retries=3)
def flaky_refund(self: object, order_id: int) -> str:
    """Fails on the first run, succeeds on the retry."""
    if self.request.retries == 0:  # type: ignore[attr-defined]
        raise self.retry(countdown=0.5)  # type: ignore[attr-defined]
    return f"refunded {order_id}"
