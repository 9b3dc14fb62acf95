"""The workers of `bench/results.py`'s round trips: a kafka-jobs app and a raw replier.

- kafka-jobs: ``python -m kafka_jobs worker -A bench.results_app -g GROUP``. The task
  ``bench.results.echo(i)`` on the topic ``BENCH_RESULTS_TOPIC`` keeps its result
  (``keep_result=True``) and returns `i`: the caller's ``handle.get()`` checks the value.
  The results topic is the app's (``KAFKA_JOBS_RESULTS_TOPIC``).
- raw confluent-kafka: ``python -m bench.results_app raw REQUESTS REPLIES GROUP MODE SECONDS``:
  a plain `Consumer` with the kafka-jobs consumer settings (`Settings.from_env()`) in
  group GROUP on REQUESTS, and a plain `Producer` with the kafka-jobs producer settings;
  each request record is answered by a record on REPLIES with the same key and value
  (`produce()` + `poll(0)`, not waited for). MODE ``poll``: `poll(0.1)`, one record per
  call; MODE ``batch``: `consume(1000, 0.1)`, the kafka-jobs listener's fetch before 27498bf.
  Positions are committed asynchronously once a second. Stops on SIGTERM or after SECONDS.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from kafka_jobs import App

TASK_NAME = "bench.results.echo"
TOPIC = os.environ.get("BENCH_RESULTS_TOPIC", "bench-results")
BATCH, POLL_TIMEOUT = 1000, 0.1  # the listener's batch_size and poll_timeout defaults


def echo(i: int) -> int:
    """The job: nothing but its result."""
    return i


app = App()
app.job(topic=TOPIC, name=TASK_NAME, keep_result=True)(echo)


def raw(requests: str, replies: str, group: str, mode: str, seconds: float) -> int:
    """Answer every record of `requests` on `replies` until SIGTERM or `seconds`."""
    from confluent_kafka import Consumer, Producer

    from kafka_jobs.settings import Settings

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    settings = Settings.from_env()
    consumer = Consumer(settings.consumer_settings(group))
    producer = Producer(settings.producer_settings())
    consumer.subscribe([requests])
    deadline = time.monotonic() + seconds
    last_commit = time.monotonic()
    try:
        while not stopping and time.monotonic() < deadline:
            if mode == "poll":
                record = consumer.poll(POLL_TIMEOUT)
                records = [] if record is None else [record]
            else:
                records = consumer.consume(BATCH, POLL_TIMEOUT)
            for record in records:
                if record.error() is None:
                    producer.produce(replies, record.value(), record.key())
            producer.poll(0)
            if time.monotonic() - last_commit >= 1.0:
                last_commit = time.monotonic()
                positions = [
                    tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0
                ]
                if positions:
                    consumer.commit(offsets=positions, asynchronous=True)
    finally:
        producer.flush(5)
        consumer.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[1] != "raw" or sys.argv[5] not in ("poll", "batch"):
        sys.exit("usage: python -m bench.results_app raw REQUESTS REPLIES GROUP poll|batch SECONDS")
    sys.exit(raw(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])))
