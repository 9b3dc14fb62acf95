"""celery_bridge: kombu messages <-> Kafka records, and the transport options."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_bridge.options import BridgeOptions, hosts_of
from celery_bridge.records import (
    NotAKombuMessage,
    _json,
    _load,
    from_record,
    partition_key,
    to_record,
)
from celery_bridge.topics import topic_name
from kafka_jobs.errors import ConfigurationError

MESSAGE = {
    "body": '[[2, 3], {}, {"callbacks": null}]',
    "content-type": "application/json",
    "content-encoding": "utf-8",
    "headers": {"task": "proj.add", "id": "abc", "retries": 0, "timelimit": [None, None]},
    "properties": {
        "correlation_id": "abc",
        "reply_to": "r-1",
        "priority": 0,
        "delivery_info": {"exchange": "x", "routing_key": "y"},
        "delivery_tag": "local",
        "body_encoding": "base64",
    },
}


def test_round_trip_keeps_body_headers_and_properties() -> None:
    value, key, headers = to_record(MESSAGE, "celery", "celery")
    assert value == MESSAGE["body"].encode() and key is None
    names = [name for name, _ in headers]
    assert "task" in names and "kombu-prop-reply_to" in names
    assert "kombu-prop-delivery_tag" not in names  # local to one consumer
    back = from_record(value, headers)
    assert back["body"] == value
    assert back["headers"] == MESSAGE["headers"]
    assert back["content-type"] == "application/json"
    props = back["properties"]
    assert props["correlation_id"] == "abc" and props["reply_to"] == "r-1"
    assert props["delivery_info"] == {"exchange": "celery", "routing_key": "celery"}


def test_partition_key_from_property_then_header() -> None:
    assert partition_key({"properties": {"partition_key": "k1"}, "headers": {}}) == b"k1"
    assert partition_key({"properties": {}, "headers": {"partition_key": 7}}) == b"7"
    assert partition_key({"properties": {}, "headers": {}}) is None
    message = {**MESSAGE, "properties": {**MESSAGE["properties"], "partition_key": "c-9"}}
    assert to_record(message, "", "q")[1] == b"c-9"


def test_headers_that_clash_with_the_transport_are_refused() -> None:
    with pytest.raises(ValueError, match="clashes"):
        to_record({**MESSAGE, "headers": {"kombu-exchange": "x"}}, "", "q")


def test_records_of_other_producers_are_not_kombu_messages() -> None:
    with pytest.raises(NotAKombuMessage, match="no kombu-version"):
        from_record(b"x", [("other", b"1")])
    with pytest.raises(NotAKombuMessage, match="kombu-version"):
        from_record(b"x", [("kombu-version", b"9")])


def test_foreign_headers_that_are_not_json_stay_text() -> None:
    _, _, headers = to_record(MESSAGE, "", "q")
    back = from_record(b"", [*headers, ("traceparent", b"00-ab-cd-01")])
    assert back["headers"]["traceparent"] == "00-ab-cd-01"


def test_hosts_from_url_and_failover_alternates() -> None:
    assert hosts_of("h1", 9093, ["kafkajobs://h1:9093"]) == ["h1:9093"]
    assert hosts_of("h1", None, ["kafkajobs://h1", "kafkajobs://h2:9094", "h3"]) == [
        "h1:9092",
        "h2:9094",
        "h3:9092",
    ]
    assert hosts_of(None, None, []) == []


def test_options_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:1")
    assert BridgeOptions.from_transport_options({}, []).bootstrap_servers == "env:1"
    assert BridgeOptions.from_transport_options({}, ["a:1", "b:2"]).bootstrap_servers == "a:1,b:2"
    given = {"bootstrap_servers": "o:3", "polling_interval": 1}  # kombu's own keys ignored
    assert BridgeOptions.from_transport_options(given, ["a:1"]).bootstrap_servers == "o:3"


def test_consumers_never_auto_commit_and_sasl_passes_through() -> None:
    options = BridgeOptions(
        bootstrap_servers="b:1",
        kafka_config={"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
        consumer_config={"session.timeout.ms": 6000},
    )
    conf = options.consumer_settings("g")
    assert conf["enable.auto.commit"] is False and conf["group.id"] == "g"
    assert conf["security.protocol"] == "SASL_SSL" and conf["session.timeout.ms"] == 6000
    assert options.producer_settings()["sasl.mechanism"] == "PLAIN"
    assert options.admin_settings()["security.protocol"] == "SASL_SSL"
    reader = options.consumer_settings(None)
    assert reader["auto.offset.reset"] == "latest" and reader["group.id"].startswith("celery-")


def test_auto_commit_is_refused_not_silently_overridden() -> None:
    options = BridgeOptions(bootstrap_servers="b:1", consumer_config={"enable.auto.commit": True})
    with pytest.raises(ConfigurationError, match=r"enable\.auto\.commit=True would commit offsets"):
        options.consumer_settings("g")


def test_the_workers_environment_configures_the_bridge_and_transport_options_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_JOBS_CONSUMER_SESSION_TIMEOUT_MS", "7000")
    monkeypatch.setenv("KAFKA_JOBS_CONSUMER_HEARTBEAT_INTERVAL_MS", "700")
    monkeypatch.setenv("KAFKA_JOBS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    options = BridgeOptions.from_transport_options(
        {"consumer_config": {"heartbeat.interval.ms": 500}}, ["b:1"]
    )
    conf = options.consumer_settings("g")
    assert conf["session.timeout.ms"] == "7000"  # from the environment
    assert conf["heartbeat.interval.ms"] == 500  # the transport option wins
    assert options.producer_settings()["security.protocol"] == "SASL_SSL"


def test_dead_letter_topic_template() -> None:
    assert BridgeOptions().dead_letter_topic_of("q") == "q.dlq"
    assert BridgeOptions(dead_letter_topic=None).dead_letter_topic_of("q") is None
    assert BridgeOptions(dead_letter_topic="dead.{queue}").dead_letter_topic_of("q") == "dead.q"


def test_topic_names_are_valid_kafka_names() -> None:
    assert topic_name("celery") == "celery"
    assert topic_name("a b/c:d") == "a_b_c_d"
    assert topic_name("") == "__"
    assert len(topic_name("x" * 400)) == 249


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(json_values)
def test_header_values_are_json_and_come_back_equal(value: object) -> None:
    encoded = _json(value)
    assert json.loads(encoded) == value
    assert _load(encoded) == value


@given(st.binary(max_size=40))
def test_any_header_bytes_decode_without_raising(raw: bytes) -> None:
    _load(raw)


def test_group_timeouts_default_short_and_every_layer_overrides_the_defaults() -> None:
    conf = BridgeOptions(bootstrap_servers="b:1").consumer_settings("g")
    assert conf["session.timeout.ms"] == 10_000 and conf["heartbeat.interval.ms"] == 2_000
    layered = BridgeOptions(
        bootstrap_servers="b:1",
        kafka_config={"session.timeout.ms": 30_000, "partition.assignment.strategy": "range"},
        consumer_config={"session.timeout.ms": 20_000},
    ).consumer_settings("g")
    # built-in defaults < kafka_config < consumer_config
    assert layered["partition.assignment.strategy"] == "range"
    assert layered["session.timeout.ms"] == 20_000
    kip848 = BridgeOptions(bootstrap_servers="b:1", group_protocol="consumer")
    conf = kip848.consumer_settings("g")  # the broker owns these under KIP-848
    assert "session.timeout.ms" not in conf and "heartbeat.interval.ms" not in conf


def test_broadcast_readers_fetch_with_a_short_wait_unless_configured() -> None:
    options = BridgeOptions(bootstrap_servers="b:1")
    assert options.consumer_settings(None)["fetch.wait.max.ms"] == 20
    assert "fetch.wait.max.ms" not in options.consumer_settings("g")  # librdkafka's default
    tuned = BridgeOptions(bootstrap_servers="b:1", consumer_config={"fetch.wait.max.ms": 50})
    assert tuned.consumer_settings(None)["fetch.wait.max.ms"] == 50
    option = BridgeOptions(bootstrap_servers="b:1", broadcast_fetch_wait_ms=5)
    assert option.consumer_settings(None)["fetch.wait.max.ms"] == 5
