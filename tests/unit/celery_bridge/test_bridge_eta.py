"""Choosing the delay tier and headers of a Celery message from its eta (celery_bridge.eta)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from celery_bridge.eta import DelayHop, delay_hop, eta_ms
from celery_bridge.options import BridgeOptions
from kafka_jobs.delay.tiers import tier_topic, without_delay_headers
from kafka_jobs.wire import H_ETA, H_NOT_BEFORE, H_TARGET, header_map

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PREFIX = "kafka-jobs.delay"


def _headers(eta: datetime | str | None) -> dict[str, object]:
    # As Celery's protocol 2 writes them: the eta is ISO 8601 text (None without one).
    text = eta.isoformat() if isinstance(eta, datetime) else eta
    return {"task": "proj.add", "id": "abc", "eta": text, "expires": None, "retries": 0}


def test_eta_is_read_from_the_iso_header() -> None:
    assert eta_ms(_headers(NOW + timedelta(seconds=30))) == NOW_MS + 30_000
    other_zone = (NOW + timedelta(seconds=30)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert eta_ms(_headers(other_zone)) == NOW_MS + 30_000
    assert eta_ms(_headers("2030-01-02T03:04:35Z")) == NOW_MS + 30_000
    assert eta_ms({"eta": NOW}) == NOW_MS  # a datetime (not through JSON)


@pytest.mark.parametrize("eta", [None, "", "tomorrow", "2030-01-02T03:04:35"])
def test_no_eta_a_bad_one_or_one_without_timezone_is_not_delayed(eta: str | None) -> None:
    # Celery reads a naive eta in the app's timezone, which the transport does not know.
    assert eta_ms(_headers(eta)) is None
    assert delay_hop(_headers(eta), NOW_MS, 0.0, PREFIX) is None
    assert delay_hop({}, NOW_MS, 0.0, PREFIX) is None


def test_below_or_at_the_threshold_the_message_goes_to_its_queue() -> None:
    assert delay_hop(_headers(NOW + timedelta(seconds=10)), NOW_MS, 10.0, PREFIX) is None
    assert delay_hop(_headers(NOW + timedelta(seconds=5)), NOW_MS, 10.0, PREFIX) is None
    assert delay_hop(_headers(NOW - timedelta(seconds=60)), NOW_MS, 0.0, PREFIX) is None  # past


def test_threshold_none_turns_delaying_off() -> None:
    assert delay_hop(_headers(NOW + timedelta(days=3)), NOW_MS, None, PREFIX) is None


@pytest.mark.parametrize(
    ("seconds", "tier", "not_before"),
    [
        (11, 4, 4),  # the longest tier not past the eta; released after 4 s for the next hop
        (100, 64, 64),
        (3 * 86_400, 65_536, 65_536),
        (3.5, 1, 1),
        (0.5, 1, 0.5),  # shorter than the shortest tier: it waits exactly until its eta
    ],
)
def test_beyond_the_threshold_the_tier_is_chosen_from_the_eta(
    seconds: float, tier: int, not_before: float
) -> None:
    eta = NOW + timedelta(seconds=seconds)
    hop = delay_hop(_headers(eta), NOW_MS, 0.2, "pfx")
    due = NOW_MS + int(seconds * 1000)
    assert hop == DelayHop(tier_topic("pfx", tier), due, NOW_MS + int(not_before * 1000))


def test_the_record_keeps_every_header_and_gains_the_delay_headers() -> None:
    hop = delay_hop(_headers(NOW + timedelta(seconds=30)), NOW_MS, 10.0, PREFIX)
    assert hop is not None
    record_headers = [
        ("kombu-version", b"1"),
        ("kombu-routing-key", b"celery"),
        ("task", b'"proj.add"'),
        ("eta", b'"2030-01-02T03:04:35+00:00"'),
    ]
    delayed = hop.headers(record_headers, "celery")
    found = header_map(delayed)
    assert found[H_TARGET] == b"celery"
    assert found[H_ETA] == str(NOW_MS + 30_000).encode()
    assert found[H_NOT_BEFORE] == str(NOW_MS + 16_000).encode()
    # What the dispatcher writes to the queue topic at the due time: the message as published.
    assert without_delay_headers(delayed) == record_headers


def test_transport_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_JOBS_DELAY_TOPIC_PREFIX", raising=False)
    options = BridgeOptions.from_transport_options({}, ["h:9092"])
    assert options.eta_threshold == 10.0
    assert options.delay_topic_prefix == "kafka-jobs.delay"
    off = BridgeOptions.from_transport_options({"eta_threshold": None}, ["h:9092"])
    assert off.eta_threshold is None
    with pytest.raises(ValueError, match="eta_threshold"):
        BridgeOptions.from_transport_options({"eta_threshold": -1}, ["h:9092"])
    monkeypatch.setenv("KAFKA_JOBS_DELAY_TOPIC_PREFIX", "shared.delay")  # as kafka-jobs workers
    assert BridgeOptions.from_transport_options({}, ["h:9092"]).delay_topic_prefix == "shared.delay"
