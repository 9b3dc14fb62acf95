"""A worker subscribed by pattern picks up new matching topics, never their dead letters."""

from __future__ import annotations

import re
import time
from collections import Counter

from kafka_jobs import dlq
from kafka_jobs.testing import BrokerInfo, create_topic, unique_name, wait_until


def test_new_matching_topic_is_consumed_and_its_dead_letters_are_not(
    kafka_app, kafka_broker: BrokerInfo
) -> None:
    prefix = unique_name("pat")
    first = create_topic(kafka_broker.bootstrap_servers, f"{prefix}-a", 1)
    app = kafka_app(default_topic=first, pattern_refresh_interval=0.5)
    runs: Counter[tuple[str, int]] = Counter()

    @app.job(retries=1, backoff=0.05)
    def handle(n: int) -> None:
        from kafka_jobs import current_job

        runs[(current_job().topic, n)] += 1
        if n == 99:
            raise ValueError("cannot handle 99")

    subscriptions: list[list[str]] = []
    app.events.subscribe(
        lambda e: (
            subscriptions.append(e.payload["topics"]) if e.name == "topics.subscribed" else None
        )
    )
    handle.delay(1)
    app.flush(30)
    # The broad mistake: the pattern also matches the dead-letter topics it will create.
    with app.worker(topics_pattern=f"{re.escape(prefix)}-.*") as worker:
        assert wait_until(lambda: runs[(first, 1)] == 1, timeout=30)
        second = create_topic(kafka_broker.bootstrap_servers, f"{prefix}-b", 2)
        handle.apply_async((2,), topic=second)
        handle.apply_async((99,), topic=second)
        app.flush(30)
        assert wait_until(lambda: runs[(second, 2)] == 1, timeout=30), "new topic not consumed"
        assert wait_until(lambda: dlq.read(app, f"{second}.dlq").letters, timeout=30)
        time.sleep(3)  # several refresh intervals with the dead letter sitting there
        owned = {r.topic for r in worker.report()}
    assert runs[(second, 99)] == 2, "the failing job ran more than its retry: a loop"
    assert owned == {first, second}
    assert all(not t.endswith(".dlq") for topics in subscriptions for t in topics)
    assert subscriptions[-1] == [first, second]
    (letter,) = dlq.read(app, f"{second}.dlq").letters
    assert letter.info["message"] == "cannot handle 99"
    existing = set(kafka_broker.admin().list_topics(timeout=10).topics)
    assert f"{second}.dlq.dlq" not in existing


def test_dead_letter_topic_named_explicitly_is_consumed(
    kafka_app, kafka_broker: BrokerInfo
) -> None:
    prefix = unique_name("pat")
    source = create_topic(kafka_broker.bootstrap_servers, f"{prefix}-src", 1)
    letters = create_topic(kafka_broker.bootstrap_servers, f"{source}.dlq", 1)
    app = kafka_app(default_topic=source, pattern_refresh_interval=0.5)
    seen: list[str] = []

    @app.job
    def handle(n: int) -> None:
        from kafka_jobs import current_job

        seen.append(current_job().topic)

    handle.delay(1)
    handle.apply_async((2,), topic=letters)
    app.flush(30)
    with app.worker(topics=[letters], topics_pattern=f"{re.escape(prefix)}-.*"):
        assert wait_until(lambda: sorted(seen) == sorted([source, letters]), timeout=30)
    assert len(seen) == 2
