"""The consumers of `bench/latency.py`: each notes when every job (or record) reached it.

Every consumer appends one line per job to the marks file ``BENCH_LATENCY_MARKS``, in one
`os.write` (O_APPEND): ``<seq> <sent> <started> <pid>``, where `sent` is the `time.time()`
the benchmark stamped into the job just before it enqueued it and `started` the
`time.time()` when the job body began (kafka-jobs, Celery) or when the consumer call
returned the record (raw). All processes run on one machine: one clock.

- kafka-jobs: ``python -m kafka_jobs worker -A bench.latency_app -g GROUP``, the task
  ``bench.latency.stamp(seq, sent)`` on the topic ``BENCH_LATENCY_TOPIC``.
- Celery: ``celery -A bench.latency_app:celery_app worker --pool threads -c 4 -Q TOPIC``
  over ``kafkajobs://`` (`celery_bridge`): the same task name, broker URL from
  ``BENCH_CELERY_BROKER``, transport options (JSON) from ``BENCH_CELERY_TRANSPORT_OPTIONS``;
  the Celery app exists only when ``BENCH_CELERY_BROKER`` is set.
- raw confluent-kafka: ``python -m bench.latency_app raw TOPIC GROUP MODE SECONDS``: a plain
  `Consumer` with the kafka-jobs consumer settings (`Settings.from_env()`, so the group
  timeouts and group protocol of the environment apply) in group GROUP, subscribed to
  TOPIC, whose record values are JSON ``{"seq": ..., "sent": ...}``. MODE ``poll``:
  `poll(0.1)`, one record per call; MODE ``batch``: `consume(1000, 0.1)`, the call the
  kafka-jobs listener makes. Positions are committed asynchronously once a second. Stops
  on SIGTERM or after SECONDS.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from kafka_jobs import App

TASK_NAME = "bench.latency.stamp"
TOPIC = os.environ.get("BENCH_LATENCY_TOPIC", "bench-latency")
MARKS = os.environ.get("BENCH_LATENCY_MARKS", "")
BATCH, POLL_TIMEOUT = 1000, 0.1  # the kafka-jobs listener's consume(batch_size, poll_timeout)

_fd: int | None = None


def mark(seq: int, sent: float, started: float) -> None:
    """Append `seq sent started pid` to the marks file (nothing without one)."""
    global _fd
    if not MARKS:
        return
    if _fd is None:
        _fd = os.open(MARKS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{seq} {sent:.6f} {started:.6f} {os.getpid()}\n".encode())


def stamp(seq: int, sent: float) -> None:
    """The job: note when it started."""
    mark(seq, sent, time.time())


app = App()
app.job(topic=TOPIC, name=TASK_NAME)(stamp)


# --- Celery -----------------------------------------------------------------------------


def make_celery(broker_url: str, queue: str, transport_options: dict[str, Any]) -> tuple[Any, Any]:
    """A Celery app on `broker_url` routing to `queue`, and its `bench.latency.stamp` task."""
    from celery import Celery  # type: ignore[import-untyped]

    import celery_bridge  # noqa: F401  (registers kafkajobs://)

    made = Celery("bench-latency", broker=broker_url, set_as_current=False)
    made.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
    )
    task = made.task(name=TASK_NAME, shared=False)(stamp)
    return made, task


if os.environ.get("BENCH_CELERY_BROKER"):
    celery_app, _celery_task = make_celery(
        os.environ["BENCH_CELERY_BROKER"],
        TOPIC,
        json.loads(os.environ.get("BENCH_CELERY_TRANSPORT_OPTIONS") or "{}"),
    )


# --- raw confluent-kafka ----------------------------------------------------------------


def raw(topic: str, group: str, mode: str, seconds: float) -> int:
    """Consume `topic` in `group` until SIGTERM or `seconds`; a mark per record."""
    from confluent_kafka import Consumer

    from kafka_jobs.settings import Settings

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(Settings.from_env().consumer_settings(group))
    consumer.subscribe([topic])
    deadline = time.monotonic() + seconds
    last_commit = time.monotonic()
    try:
        while not stopping and time.monotonic() < deadline:
            if mode == "poll":
                record = consumer.poll(POLL_TIMEOUT)
                records = [] if record is None else [record]
            else:
                records = consumer.consume(BATCH, POLL_TIMEOUT)
            now = time.time()
            for record in records:
                if record.error() is not None:
                    continue
                call = json.loads(record.value())  # type: ignore[arg-type]
                mark(call["seq"], call["sent"], now)
            if time.monotonic() - last_commit >= 1.0:
                last_commit = time.monotonic()
                positions = [
                    tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0
                ]
                if positions:
                    consumer.commit(offsets=positions, asynchronous=True)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "raw" or sys.argv[4] not in ("poll", "batch"):
        sys.exit("usage: python -m bench.latency_app raw TOPIC GROUP poll|batch SECONDS")
    sys.exit(raw(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
