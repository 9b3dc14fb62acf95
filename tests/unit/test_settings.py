"""Settings: environment parsing, librdkafka pass-through, merge order, validation."""

from __future__ import annotations

import dataclasses
import math

import pytest

from kafka_jobs.errors import ConfigurationError
from kafka_jobs.settings import ENV_VARIABLES, Settings

INT_FIELDS = ["concurrency", "batch_size", "max_payload_bytes"]
FLOAT_FIELDS = [
    "poll_timeout",
    "commit_interval",
    "shutdown_timeout",
    "delivery_timeout",
    "tick_interval",
]


# --- from_env: plain fields ---------------------------------------------------------


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_parses_every_field() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2",
        "KAFKA_JOBS_GROUP_ID": "workers",
        "KAFKA_JOBS_DEFAULT_TOPIC": "jobs",
        "KAFKA_JOBS_CONCURRENCY": "16",
        "KAFKA_JOBS_BATCH_SIZE": "50",
        "KAFKA_JOBS_POLL_TIMEOUT": "0.25",
        "KAFKA_JOBS_COMMIT_INTERVAL": "2",
        "KAFKA_JOBS_SHUTDOWN_TIMEOUT": "0",
        "KAFKA_JOBS_DELIVERY_TIMEOUT": "1e1",
        "KAFKA_JOBS_MAX_PAYLOAD_BYTES": "2048",
        "KAFKA_JOBS_TICK_INTERVAL": "0.5",
    }
    settings = Settings.from_env(env)
    assert settings.bootstrap_servers == "a:1,b:2"
    assert settings.group_id == "workers"
    assert settings.default_topic == "jobs"
    assert (settings.concurrency, settings.batch_size, settings.max_payload_bytes) == (16, 50, 2048)
    assert settings.poll_timeout == 0.25
    assert settings.commit_interval == 2.0
    assert settings.shutdown_timeout == 0.0
    assert settings.delivery_timeout == 10.0
    assert settings.tick_interval == 0.5
    for name in INT_FIELDS:
        assert type(getattr(settings, name)) is int
    for name in FLOAT_FIELDS:
        assert type(getattr(settings, name)) is float


def test_every_field_but_the_client_configs_has_a_variable() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(ENV_VARIABLES) == fields - {"kafka_config", "producer_config", "consumer_config"}


def test_empty_variables_are_ignored() -> None:
    assert Settings.from_env({"KAFKA_JOBS_CONCURRENCY": "", "KAFKA_JOBS_GROUP_ID": ""}) == (
        Settings()
    )


def test_overrides_win_over_the_environment() -> None:
    env = {"KAFKA_JOBS_CONCURRENCY": "8", "KAFKA_JOBS_CONSUMER_FETCH_MAX_BYTES": "1"}
    settings = Settings.from_env(env, concurrency=2, consumer_config={"a.b": "c"})
    assert settings.concurrency == 2
    assert settings.consumer_config == {"a.b": "c"}


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Settings.from_env({"KAFKA_JOBS_CONCURRENCY": "8"}, concurrency=0)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("KAFKA_JOBS_CONCURRENCY", "four"),
        ("KAFKA_JOBS_CONCURRENCY", "1.5"),
        ("KAFKA_JOBS_BATCH_SIZE", "10k"),
        ("KAFKA_JOBS_MAX_PAYLOAD_BYTES", "1e6"),
        ("KAFKA_JOBS_POLL_TIMEOUT", "fast"),
        ("KAFKA_JOBS_SHUTDOWN_TIMEOUT", "30s"),
        ("KAFKA_JOBS_TICK_INTERVAL", "1,5"),
    ],
)
def test_bad_numbers_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{variable}='{raw}' is not a valid"):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("KAFKA_JOBS_CONCURRENCY", "0", "concurrency must be at least 1"),
        ("KAFKA_JOBS_BATCH_SIZE", "-1", "batch_size must be at least 1"),
        ("KAFKA_JOBS_POLL_TIMEOUT", "0", "poll_timeout must be positive"),
        ("KAFKA_JOBS_SHUTDOWN_TIMEOUT", "-0.5", "shutdown_timeout must not be negative"),
    ],
)
def test_out_of_range_numbers_from_the_environment_are_rejected(
    variable: str, raw: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({variable: raw})


# --- from_env: librdkafka pass-through ------------------------------------------------------


def test_client_prefixes_map_to_librdkafka_keys() -> None:
    env = {
        "KAFKA_JOBS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_JOBS_KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_JOBS_PRODUCER_COMPRESSION_TYPE": "zstd",
        "KAFKA_JOBS_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_JOBS_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
        "UNRELATED": "x",
        "KAFKA_JOBS_CONCURRENCY": "3",
    }
    settings = Settings.from_env(env)
    assert settings.kafka_config == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}
    assert settings.producer_config == {"compression.type": "zstd"}
    assert settings.consumer_config == {
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "1000",
    }
    assert settings.consumer_settings()["session.timeout.ms"] == "6000"
    assert settings.producer_settings()["security.protocol"] == "SASL_SSL"


def test_a_bare_prefix_is_ignored() -> None:
    settings = Settings.from_env({"KAFKA_JOBS_KAFKA_": "x", "KAFKA_JOBS_CONSUMER_": "y"})
    assert settings.kafka_config == {}
    assert settings.consumer_config == {}


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_JOBS_GROUP_ID", "from-os")
    monkeypatch.setenv("KAFKA_JOBS_PRODUCER_LINGER_MS", "50")
    settings = Settings.from_env()
    assert settings.group_id == "from-os"
    assert settings.producer_settings()["linger.ms"] == "50"


# --- client configurations --------------------------------------------------------------


def test_producer_settings_defaults() -> None:
    conf = Settings(bootstrap_servers="k:9092", delivery_timeout=2.5).producer_settings()
    assert conf == {
        "bootstrap.servers": "k:9092",
        "linger.ms": 5,
        "enable.idempotence": True,
        "message.timeout.ms": 2500,
    }


def test_consumer_settings_defaults_never_auto_commit() -> None:
    conf = Settings(bootstrap_servers="k:9092", group_id="g").consumer_settings()
    assert conf["bootstrap.servers"] == "k:9092"
    assert conf["group.id"] == "g"
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert Settings(group_id="g").consumer_settings("other")["group.id"] == "other"


def test_merge_order_defaults_then_kafka_config_then_specific() -> None:
    settings = Settings(
        kafka_config={"linger.ms": 1, "auto.offset.reset": "latest", "client.id": "all"},
        producer_config={"linger.ms": 2},
        consumer_config={"client.id": "consumer"},
    )
    producer = settings.producer_settings()
    assert producer["linger.ms"] == 2
    assert producer["client.id"] == "all"
    assert "auto.offset.reset" in producer  # kafka_config goes to every client
    consumer = settings.consumer_settings()
    assert consumer["auto.offset.reset"] == "latest"
    assert consumer["client.id"] == "consumer"
    assert "linger.ms" in consumer and consumer["linger.ms"] == 1
    admin = settings.admin_settings()
    assert admin["client.id"] == "all"
    assert "linger.ms" in admin
    assert admin["bootstrap.servers"] == settings.bootstrap_servers


def test_client_configs_may_override_the_defaults() -> None:
    settings = Settings(consumer_config={"auto.offset.reset": "latest", "group.id": "forced"})
    assert settings.consumer_settings()["auto.offset.reset"] == "latest"
    assert settings.consumer_settings("ignored")["group.id"] == "forced"


@pytest.mark.parametrize("key", ["enable.auto.commit", "enable.auto.offset.store"])
def test_automatic_offset_commits_are_refused(key: str) -> None:
    # librdkafka committing on its own would commit jobs that have not run yet.
    with pytest.raises(ConfigurationError, match=key):
        Settings(kafka_config={key: True})
    assert Settings(consumer_config={key: "false"}).consumer_settings()[key] is False


def test_client_settings_are_fresh_dicts() -> None:
    settings = Settings(kafka_config={"a": 1})
    settings.producer_settings()["a"] = 2
    settings.consumer_settings()["a"] = 3
    assert settings.kafka_config == {"a": 1}
    assert settings.producer_settings()["a"] == 1


# --- validation and immutability -------------------------------------------------------------


@pytest.mark.parametrize("name", INT_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_at_least_one(name: str, value: int) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} must be at least 1"):
        Settings(**{name: value})


@pytest.mark.parametrize("name", ["poll_timeout", "commit_interval", "delivery_timeout"])
@pytest.mark.parametrize("value", [0, -0.1])
def test_intervals_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} must be positive"):
        Settings(**{name: value})


def test_tick_interval_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="tick_interval must be positive"):
        Settings(tick_interval=0)


def test_shutdown_timeout_may_be_zero_but_not_negative() -> None:
    assert Settings(shutdown_timeout=0).shutdown_timeout == 0
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        Settings(shutdown_timeout=-1)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Settings(concurrency=0)


def test_replace_validates_and_leaves_the_original() -> None:
    original = Settings(concurrency=2)
    assert original.replace(concurrency=5).concurrency == 5
    assert original.concurrency == 2
    with pytest.raises(ConfigurationError):
        original.replace(batch_size=0)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_nan_is_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**{name: math.nan})


@pytest.mark.parametrize("raw", ["inf", "nan"])
def test_non_finite_delivery_timeout_is_a_configuration_error(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"KAFKA_JOBS_DELIVERY_TIMEOUT|delivery_timeout"):
        Settings.from_env({"KAFKA_JOBS_DELIVERY_TIMEOUT": raw}).producer_settings()
