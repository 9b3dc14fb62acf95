"""An app that declares its topics, for `kafka-jobs topics plan | migrate` tests.

Environment: TOPICS_PREFIX names every topic of the app (so runs never share one).
"""

from __future__ import annotations

import os

from kafka_jobs import App

PREFIX = os.environ.get("TOPICS_PREFIX", "topics-app")
app = App(
    default_topic=f"{PREFIX}.orders",
    delay_topic_prefix=f"{PREFIX}.delay",
    status_topic=f"{PREFIX}.status",
    results_topic=f"{PREFIX}.results",
    results_partitions=2,
)
app.configure_topic(f"{PREFIX}.small", partitions=3, config={"retention.ms": "3600000"})
app.configure_topic(f"{PREFIX}.big", partitions=2)


@app.job(partitions=3, config={"retention.ms": "7200000"}, keep_result=True)
def place(order: int) -> int:
    """A job on the default topic, which it declares."""
    return order


@app.job(topic=f"{PREFIX}.small", retries=1, dead_letter_topic=f"{PREFIX}.small.dlq")
def resize(n: int) -> None:
    """A job on a topic declared by configure_topic."""
