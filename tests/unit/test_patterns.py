"""Which topics a pattern selects: never dead letters, delay tiers or internal topics."""

from __future__ import annotations

import pytest

from kafka_jobs.patterns import TopicPattern

EXISTING = [
    "orders",
    "orders.dlq",
    "orders-eu",
    "orders-eu.failed",
    "payments",
    "kafka-jobs.delay.5s",
    "__consumer_offsets",
    "stray.dlq",
]


def test_a_broad_pattern_skips_dead_letters_delay_tiers_and_internal_topics() -> None:
    pattern = TopicPattern.compile(
        ".*", dead_letter_of=lambda t: f"{t}.failed" if "eu" in t else f"{t}.dlq"
    )
    assert pattern.select(EXISTING) == ["orders", "orders-eu", "payments"]


def test_whole_name_match_and_explicit_topics_always_in() -> None:
    pattern = TopicPattern.compile("orders", explicit=frozenset({"orders.dlq", "later"}))
    # "orders-eu" does not match "orders" as a whole name; explicit ones are in even
    # when they are dead letters or do not exist yet.
    assert pattern.select(EXISTING) == ["later", "orders", "orders.dlq"]


def test_dead_letter_topics_named_by_jobs_are_never_selected() -> None:
    pattern = TopicPattern.compile("pay.*", never=frozenset({"payments"}))
    assert pattern.select(EXISTING) == []


def test_an_invalid_pattern_says_why() -> None:
    with pytest.raises(ValueError, match="invalid topic pattern"):
        TopicPattern.compile("orders(")


def test_a_worker_pattern_skips_the_status_topic_and_other_groups_topics() -> None:
    from kafka_jobs import App
    from kafka_jobs.worker.runner import Worker

    app = App(bootstrap_servers="127.0.0.1:1", status_topic="ops.status")

    @app.job(topic="ops.billing", subscription_group="billing")
    def bill() -> None: ...

    @app.job(topic="ops.mail", dead_letter_topic="ops.mail-failed")
    def mail() -> None: ...

    worker = Worker(app, topics=["ops.billing"], topics_pattern="ops\\..*")
    (default,) = [g for g in worker.groups if g.name == "default"]
    assert default.pattern is not None
    existing = ["ops.status", "ops.billing", "ops.mail", "ops.mail-failed", "ops.orders"]
    # billing has its own connection; the mail job's dead letters and the status topic
    # are never jobs.
    assert default.pattern.select(existing) == ["ops.mail", "ops.orders"]
