"""Declared topics: what an app declares, and the differences `migrate` acts on."""

from __future__ import annotations

import pytest

from kafka_jobs import App, ConfigurationError
from kafka_jobs.declarative import Change, Existing, TopicSpec, declared, differences, table


def test_a_missing_topic_is_created_with_what_it_declares() -> None:
    spec = TopicSpec("t", "jobs", 3, None, {"retention.ms": "1"})
    [change] = differences(spec, None)
    assert change.action == "create" and "3 partitions" in change.detail


def test_partitions_grow_but_never_shrink_and_the_replication_factor_is_only_reported() -> None:
    spec = TopicSpec("t", "jobs", 4, 3)
    grow = differences(spec, Existing(2, 3, {}))
    assert grow == [Change("t", "add-partitions", "2 -> 4")]
    shrink = differences(TopicSpec("t", "jobs", 1, 1), Existing(2, 3, {}))
    assert [c.action for c in shrink] == ["warn", "warn"]
    assert "never removed" in shrink[0].detail and "reassignment" in shrink[1].detail


def test_only_declared_configs_are_compared_and_a_match_is_no_change() -> None:
    spec = TopicSpec("t", "jobs", None, None, {"retention.ms": "5"})
    assert differences(spec, Existing(7, 1, {"retention.ms": "5", "segment.ms": "9"})) == []
    [change] = differences(spec, Existing(7, 1, {"retention.ms": "6"}))
    assert change == Change("t", "set-config", "retention.ms: 6 -> 5")


def test_an_app_implies_its_dead_letter_delay_results_and_status_topics() -> None:
    app = App(default_topic="orders", results_topic="res", status_topic="st")

    @app.job(partitions=6, keep_result=True, retries=1, dead_letter_topic="orders.dlq")
    def place() -> None: ...

    specs = {spec.name: spec for spec in declared(app)}
    assert specs["orders"].partitions == 6
    assert specs["orders.dlq"].kind == "dead-letter"
    assert specs["res"].config["cleanup.policy"] == "compact,delete"
    assert specs["st"].kind == "status"
    assert any(spec.kind == "delay" for spec in specs.values())


def test_two_declarations_of_one_topic_must_agree() -> None:
    app = App(default_topic="orders")
    app.configure_topic("orders", partitions=3)

    @app.job(partitions=4)
    def place() -> None: ...

    with pytest.raises(ConfigurationError, match="partitions 3 and 4"):
        declared(app)


def test_bad_declarations_are_refused_when_made() -> None:
    app = App(default_topic="orders")
    with pytest.raises(ConfigurationError, match="partitions must be at least 1"):
        app.configure_topic("orders", partitions=0)
    with pytest.raises(ConfigurationError, match="replication_factor"):
        app.configure_topic("orders", replication_factor=0)
    with pytest.raises(ConfigurationError, match="strings"):
        app.configure_topic("orders", config={"retention.ms": 5})  # type: ignore[dict-item]


def test_the_table_says_when_nothing_differs() -> None:
    assert table([]).startswith("nothing to change")
    assert table([Change("t", "create", "x")]).splitlines()[1].split() == ["t", "create", "x"]
