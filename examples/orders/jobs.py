"""Jobs of the orders example; served by `kafka-jobs worker -A examples.orders.jobs`."""

from __future__ import annotations

import hashlib
import logging

from kafka_jobs import current_job, kafka_job

log = logging.getLogger("examples.orders")


@kafka_job(topic="orders", key="order_id")
def process_order(order_id: int, amount_cents: int, note: str = "") -> str:
    """Pretend to process an order: a little CPU work, then a receipt id."""
    job = current_job()
    receipt = hashlib.sha256(f"{order_id}:{amount_cents}:{note}".encode()).hexdigest()[:12]
    log.debug("order %s -> receipt %s (partition %s)", order_id, receipt, job.partition)
    return receipt
