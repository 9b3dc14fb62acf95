"""Demo: start a broker (unless KAFKA_BOOTSTRAP_SERVERS is set), enqueue orders, run a worker.

python -m examples.orders.demo [--orders 20000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack

from kafka_jobs import Event
from kafka_jobs.broker import EmbeddedBroker
from kafka_jobs.instrumentation.progress import Progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=6)
    options = parser.parse_args()

    with ExitStack() as stack:
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker = stack.enter_context(EmbeddedBroker())
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            print(f"started the embedded broker on {broker.bootstrap_servers}")
        os.environ.setdefault("KAFKA_JOBS_GROUP_ID", "orders-demo")
        # Short group timeouts make the demo's worker join quickly.
        os.environ.setdefault("KAFKA_JOBS_CONSUMER_SESSION_TIMEOUT_MS", "6000")
        os.environ.setdefault("KAFKA_JOBS_CONSUMER_HEARTBEAT_INTERVAL_MS", "1000")

        from examples.orders.jobs import process_order

        app = process_order.app
        app.create_topics(partitions=options.partitions)
        try:
            return run(app, process_order, options.orders, options.concurrency)
        finally:
            app.close(10)  # before the broker stops, so the client does not log reconnects


def run(app, process_order, orders: int, concurrency: int) -> int:  # type: ignore[no-untyped-def]
    outcomes: Counter[str] = Counter()
    per_partition: Counter[int] = Counter()
    lock = threading.Lock()
    first_done: list[float] = []

    def count(event: Event) -> None:
        if event.name in ("job.succeeded", "job.failed", "record.rejected"):
            with lock:
                if not first_done:
                    first_done.append(time.perf_counter())
                outcomes[event.name] += 1
                per_partition[event.payload["partition"]] += 1

    app.events.subscribe(count)

    print(f"enqueueing {orders} orders to topic 'orders'")
    started = time.perf_counter()
    with Progress("enqueued", orders, stream=sys.stdout, interval=0.5) as progress:
        for order_id in range(orders):
            process_order.delay(order_id, amount_cents=100 + order_id % 900, note="demo")
            if order_id % 500 == 499:
                progress.advance(500)
        progress.update(orders)
    app.flush(60)
    enqueue_seconds = time.perf_counter() - started

    print(f"starting a worker with {concurrency} threads (joining the group takes a few seconds)")
    worker = app.worker(concurrency=concurrency).start()
    deadline = time.monotonic() + 300
    try:
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)  # the group join; the rate below counts from the first job
        with Progress("processed", orders, stream=sys.stdout, interval=1.0) as progress:
            while sum(outcomes.values()) < orders and time.monotonic() < deadline:
                time.sleep(0.1)
                progress.update(sum(outcomes.values()))
            progress.update(sum(outcomes.values()))
        finished = time.perf_counter()  # the last job ran (within 0.1 s)
    finally:
        worker.stop()
        worker.join(60)
    done = sum(outcomes.values())
    process_seconds = finished - first_done[0] if first_done else float("nan")

    rows = [
        ("orders enqueued", f"{orders}"),
        ("enqueue time", f"{enqueue_seconds:.2f} s ({orders / enqueue_seconds:,.0f} jobs/s)"),
        ("jobs processed", f"{outcomes['job.succeeded']}"),
        ("jobs failed", f"{outcomes['job.failed'] + outcomes['record.rejected']}"),
        ("processing time", f"{process_seconds:.2f} s ({done / process_seconds:,.0f} jobs/s)"),
        ("per partition", ", ".join(f"p{p}={n}" for p, n in sorted(per_partition.items()))),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nsummary")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    ok = outcomes["job.succeeded"] == orders
    print("\nall orders processed" if ok else "\nNOT all orders were processed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
