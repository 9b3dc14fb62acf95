"""Celery on Kafka, end to end: embedded broker, a worker, tasks, canvas, a summary.

make celery-demo      (or: python -m examples.celery_app.demo)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka_jobs.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 1_000


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        env = dict(os.environ)
        env["CELERY_BROKER_URL"] = f"kafkajobs://{broker.bootstrap_servers}"
        env["CELERY_RESULT_BACKEND"] = f"db+sqlite:///{tmp}/results.sqlite"
        os.environ.update(env)
        from celery import chord

        from examples.celery_app import tasks

        log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "examples.celery_app.tasks",
                "worker",
                "-Q",
                "celery,emails",
                "-P",
                "threads",
                "-c",
                "8",
                "-l",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            print(f"broker {broker.bootstrap_servers}; worker pid {worker.pid} (threads, 8)")
            started = time.perf_counter()
            results = [tasks.charge.delay(i, 100 + i) for i in range(ORDERS)]
            enqueued = time.perf_counter() - started
            print(f"enqueued {ORDERS} charges in {enqueued:.2f} s; waiting for results...")
            done = 0
            for i, result in enumerate(results, 1):
                done += result.get(timeout=120)["cents"] > 0
                if i % 250 == 0:
                    print(f"  {i}/{ORDERS} results ({time.perf_counter() - started:.1f} s)")
            elapsed = time.perf_counter() - started
            receipt = (tasks.charge.s(7, 700) | tasks.send_receipt.s()).delay().get(timeout=60)
            summed = chord(tasks.charge.s(i, 10) for i in range(20))(tasks.total.s()).get(
                timeout=60
            )
            refund = tasks.flaky_refund.delay(9).get(timeout=60)
            rows = [
                ("charges run", f"{done}/{ORDERS}"),
                ("enqueue rate", f"{ORDERS / enqueued:,.0f} tasks/s"),
                ("end to end", f"{elapsed:.1f} s incl. worker start and SQLite results"),
                ("chain on 2 queues", receipt),
                ("chord of 20", f"total {summed} cents"),
                ("retry", refund),
            ]
            width = max(len(k) for k, _ in rows)
            print()
            for key, value in rows:
                print(f"  {key:<{width}}  {value}")
            return 0 if done == ORDERS else 1
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
