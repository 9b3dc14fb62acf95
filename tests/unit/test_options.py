"""Job and topic options: how they combine into one failure policy; topic-name rules."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.options import (
    FailurePolicy,
    RetryOptions,
    TopicOptions,
    TopicSettings,
    is_valid_topic_name,
    resolve,
    retry_policy,
)
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.processing.retry import RetryPolicy

JOB_RETRY = RetryPolicy(retries=5)
TOPIC_RETRY = RetryPolicy(retries=2)


# --- resolve: retry ------------------------------------------------------------------------


def test_defaults_without_any_options() -> None:
    assert resolve("orders", None, None, None) == FailurePolicy(RetryPolicy(), "orders.dlq")


def test_default_retry_policy_retries_nothing() -> None:
    policy = resolve("orders", None, None, TopicOptions())
    assert policy.retry == RetryPolicy()
    assert not policy.retry.should_retry(ValueError(), 1)


def test_job_retry_wins_over_topic_retry() -> None:
    policy = resolve("t", JOB_RETRY, None, TopicOptions(retry=TOPIC_RETRY))
    assert policy.retry is JOB_RETRY


def test_topic_retry_applies_when_the_job_has_none() -> None:
    assert resolve("t", None, None, TopicOptions(retry=TOPIC_RETRY)).retry is TOPIC_RETRY


def test_job_retry_without_topic_options() -> None:
    assert resolve("t", JOB_RETRY, None, None).retry is JOB_RETRY


# --- resolve: dead-letter topic ------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "topic", "expected"),
    [
        (None, None, "t.dlq"),  # both inherit: the default
        (None, "topic-dlq", "topic-dlq"),
        (None, False, None),  # the topic disables
        ("job-dlq", None, "job-dlq"),
        ("job-dlq", "topic-dlq", "job-dlq"),  # the job wins
        ("job-dlq", False, "job-dlq"),  # the job re-enables
        (False, None, None),  # the job disables
        (False, "topic-dlq", None),  # ... even over a topic's
        (False, False, None),
    ],
)
def test_dead_letter_precedence(
    job: str | bool | None, topic: str | bool | None, expected: str | None
) -> None:
    options = TopicOptions(dead_letter_topic=topic)  # type: ignore[arg-type]
    assert resolve("t", None, job, options).dead_letter_topic == expected  # type: ignore[arg-type]


def test_default_dead_letter_topic_follows_the_topic_name() -> None:
    assert resolve("billing.invoices", None, None, None).dead_letter_topic == (
        "billing.invoices.dlq"
    )


def test_retry_and_dead_letter_resolve_independently() -> None:
    options = TopicOptions(retry=TOPIC_RETRY, dead_letter_topic="topic-dlq")
    policy = resolve("t", JOB_RETRY, None, options)
    assert policy == FailurePolicy(JOB_RETRY, "topic-dlq")
    policy = resolve("t", None, "job-dlq", options)
    assert policy == FailurePolicy(TOPIC_RETRY, "job-dlq")


# --- retry_policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dead_letter_topic": "x"},
        {"dead_letter_topic": False},
        {"long_running": True, "subscription_group": "g"},
    ],
)
def test_retry_policy_is_none_without_retry_keys(options: RetryOptions) -> None:
    assert retry_policy(options) is None


def test_retry_policy_from_one_key_keeps_the_other_defaults() -> None:
    assert retry_policy({"retries": 3}) == RetryPolicy(retries=3)
    assert retry_policy({"backoff": 0.5}) == RetryPolicy(backoff=0.5)
    assert retry_policy({"retries": 0}) == RetryPolicy()  # given, even if the default


def test_retry_policy_from_every_key() -> None:
    options: RetryOptions = {
        "retries": 4,
        "backoff": 0.25,
        "backoff_max": 9.0,
        "retry_on": (OSError,),
        "give_up_on": (PermissionError,),
        "dead_letter_topic": "ignored-here",
    }
    assert retry_policy(options) == RetryPolicy(
        retries=4,
        backoff=0.25,
        backoff_max=9.0,
        retry_on=(OSError,),
        give_up_on=(PermissionError,),
    )


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="retries"):
        retry_policy({"retries": -1})


# --- TopicOptions.from_settings ------------------------------------------------------------


def test_from_empty_settings_is_the_default() -> None:
    assert TopicOptions.from_settings({}) == TopicOptions()
    default = TopicOptions()
    assert default.retry is None
    assert default.dead_letter_topic is None
    assert default.long_running is False
    assert default.manual_offsets is False
    assert default.subscription_group is None
    assert default.virtual_partitions is None


def test_from_settings_maps_every_key() -> None:
    vp = VirtualPartitions(partitioner="tenant", max_partitions=4, distribution="balanced")
    settings: TopicSettings = {
        "retries": 2,
        "backoff": 3.0,
        "dead_letter_topic": "errors",
        "long_running": True,
        "manual_offsets": True,
        "subscription_group": "slow",
        "virtual_partitions": vp,
    }
    options = TopicOptions.from_settings(settings)
    assert options == TopicOptions(
        retry=RetryPolicy(retries=2, backoff=3.0),
        dead_letter_topic="errors",
        long_running=True,
        manual_offsets=True,
        subscription_group="slow",
        virtual_partitions=vp,
    )
    assert options.virtual_partitions is vp


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(True, VirtualPartitions()), (False, None), (None, None)],
)
def test_virtual_partitions_setting(
    setting: bool | None, expected: VirtualPartitions | None
) -> None:
    settings: TopicSettings = {}
    if setting is not None:
        settings["virtual_partitions"] = setting
    assert TopicOptions.from_settings(settings).virtual_partitions == expected


def test_dead_letter_false_is_kept_for_resolve() -> None:
    options = TopicOptions.from_settings({"dead_letter_topic": False})
    assert options.dead_letter_topic is False
    assert resolve("t", None, None, options).dead_letter_topic is None


def test_from_settings_then_resolve() -> None:
    options = TopicOptions.from_settings({"retries": 1, "virtual_partitions": True})
    assert resolve("t", None, None, options) == FailurePolicy(RetryPolicy(retries=1), "t.dlq")


# --- is_valid_topic_name -------------------------------------------------------------------

ALLOWED = string.ascii_letters + string.digits + "._-"


@pytest.mark.parametrize(
    "name",
    ["a", "orders", "Orders.V2", "my_topic-1", "...", ".a", "a.", "_", "-", "0", "a" * 249],
)
def test_valid_topic_names(name: str) -> None:
    assert is_valid_topic_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a" * 250,
        "with space",
        "slash/topic",
        "colon:topic",
        "tópico",  # non-ASCII letter
        "a\n",
        "\na",
        "tab\t",
        "star*",
        "plus+",
        "٣",  # a non-ASCII digit
        "\uff41",  # fullwidth letter a
    ],
)
def test_invalid_topic_names(name: str) -> None:
    assert not is_valid_topic_name(name)


@given(st.text(alphabet=ALLOWED, min_size=1, max_size=249))
def test_allowed_characters_up_to_249_are_valid(name: str) -> None:
    assert is_valid_topic_name(name) == (name not in (".", ".."))


@given(st.text(alphabet=ALLOWED, min_size=250, max_size=400))
def test_longer_than_249_is_invalid(name: str) -> None:
    assert not is_valid_topic_name(name)


@given(
    prefix=st.text(alphabet=ALLOWED, max_size=20),
    bad=st.characters().filter(lambda c: c not in ALLOWED),
    suffix=st.text(alphabet=ALLOWED, max_size=20),
)
def test_any_other_character_is_invalid(prefix: str, bad: str, suffix: str) -> None:
    assert not is_valid_topic_name(prefix + bad + suffix)


@given(st.text(max_size=300))
def test_matches_the_kafka_rule(name: str) -> None:
    expected = 1 <= len(name) <= 249 and all(c in ALLOWED for c in name) and name not in (".", "..")
    assert is_valid_topic_name(name) == expected
