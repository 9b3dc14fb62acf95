"""A partition paused for a retry backoff, moved away and given back, is fetched again."""

from __future__ import annotations

import threading

import pytest

from kafka_jobs.testing import unique_name, wait_until


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_paused_partition_that_comes_back_is_consumed_again(
    kafka_app, new_topic, strategy: str
) -> None:
    topic, group, prefix = new_topic(partitions=2), unique_name("g"), unique_name("delay")
    ran: list[int] = []
    lock = threading.Lock()

    def make_app():
        app = kafka_app(
            default_topic=topic,
            group_id=group,
            delay_topic_prefix=prefix,
            consumer_config={"partition.assignment.strategy": strategy},
        )

        @app.job(
            key="key",
            name="step",
            retries=1,
            backoff=8.0,
            backoff_max=8.0,
            retry_ordering="strict",  # pause the partition (relaxed would re-enqueue)
        )
        def step(n: int, key: str) -> None:
            with lock:
                ran.append(n)
            if n == 0 and ran.count(0) == 1:
                raise ConnectionError("first run fails: its partition pauses for 8 s")

        return app

    app_a, app_b = make_app(), make_app()
    step = app_a.tasks["step"]
    step.delay(0, "a")
    app_a.flush(10)
    with app_a.worker(dispatch_delayed=False):
        assert wait_until(lambda: 0 in ran, timeout=30)
        with app_b.worker(dispatch_delayed=False):  # a member joins ...
            assert wait_until(lambda: ran.count(0) == 2, timeout=60)
        # ... and leaves: every partition is A's again, including any that was paused.
        keys = [f"k{i}" for i in range(8)]  # enough keys to reach both partitions
        for n, key in enumerate(keys, start=100):
            step.delay(n, key)
        app_a.flush(10)
        assert wait_until(lambda: set(range(100, 108)) <= set(ran), timeout=60)
