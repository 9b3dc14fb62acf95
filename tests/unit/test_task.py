"""Tasks: registration, key derivation and what `.delay()` hands the producer (no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from kafka_jobs.app import App
from kafka_jobs.errors import ConfigurationError, EnqueueError, PayloadTooLarge, UnknownTask
from kafka_jobs.settings import Settings
from kafka_jobs.task import key_bytes
from kafka_jobs.wire import H_KEY, Envelope, Headers, decode, encode_value


@dataclass
class Enqueued:
    topic: str
    job_id: str
    value: bytes
    key: bytes | None
    headers: Headers

    def envelope(self) -> Envelope:
        return decode(self.value, self.headers)


class FakeProducer:
    """Stands in for `JobProducer`: records what would have been produced."""

    def __init__(self) -> None:
        self.calls: list[Enqueued] = []

    def enqueue(
        self, topic: str, job_id: str, value: bytes, key: bytes | None, headers: Headers
    ) -> Enqueued:
        call = Enqueued(topic, job_id, value, key, headers)
        self.calls.append(call)
        return call


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def app(producer: FakeProducer) -> App:
    app = App(Settings(default_topic="jobs", max_payload_bytes=1000))
    app.producer = producer  # type: ignore[assignment]
    return app


def sent_key(producer: FakeProducer) -> bytes | None:
    """The partition key of the last enqueued job; the kj-key header must agree."""
    call = producer.calls[-1]
    assert dict(call.headers).get(H_KEY) == call.key
    return call.key


# --- what delay sends -----------------------------------------------------------------------


def test_delay_sends_the_call_to_the_task_topic(app: App, producer: FakeProducer) -> None:
    @app.job(topic="orders")
    def place(order_id: int, *, note: str = "") -> None: ...

    handle = place.delay(7, note="fast")
    assert handle is producer.calls[0]
    call = producer.calls[0]
    assert call.topic == "orders"
    envelope = call.envelope()
    assert envelope.task == place.name
    assert envelope.job_id == call.job_id
    assert (envelope.args, envelope.kwargs, envelope.attempt) == ((7,), {"note": "fast"}, 1)


def test_default_topic_and_name(app: App, producer: FakeProducer) -> None:
    @app.job
    def cleanup() -> None: ...

    assert cleanup.name == f"{__name__}.test_default_topic_and_name.<locals>.cleanup"
    assert cleanup.options.topic == "jobs"
    cleanup.delay()
    assert producer.calls[0].topic == "jobs"
    assert app.tasks[cleanup.name] is cleanup
    assert app.topics() == ["jobs"]


def test_apply_async_overrides_topic_and_adds_headers(app: App, producer: FakeProducer) -> None:
    @app.job(name="named")
    def work(x: int) -> None: ...

    work.apply_async([1], {}, topic="elsewhere", headers={"tenant": "acme"})
    call = producer.calls[0]
    assert call.topic == "elsewhere"
    assert call.envelope().headers["tenant"] == b"acme"
    assert call.envelope().task == "named"


def test_each_job_gets_a_fresh_id(app: App, producer: FakeProducer) -> None:
    @app.job
    def work() -> None: ...

    for _ in range(5):
        work.delay()
    assert len({call.job_id for call in producer.calls}) == 5


def test_calling_a_task_runs_it_inline(app: App, producer: FakeProducer) -> None:
    @app.job
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    assert add(2, 3) == 5
    assert add.__doc__ == "Adds."
    assert add.__name__ == "add"
    assert producer.calls == []


# --- key derivation ------------------------------------------------------------------------


def test_no_key(app: App, producer: FakeProducer) -> None:
    @app.job
    def work(order_id: int) -> None: ...

    work.delay(1)
    assert sent_key(producer) is None
    assert H_KEY not in dict(producer.calls[-1].headers)


def test_key_from_positional_or_keyword_argument(app: App, producer: FakeProducer) -> None:
    @app.job(key="order_id")
    def work(shop: str, order_id: int, qty: int = 1) -> None: ...

    work.delay("s", 42)
    assert sent_key(producer) == b"42"
    work.delay("s", order_id=43)
    assert sent_key(producer) == b"43"
    work.delay(shop="s", qty=2, order_id=44)
    assert sent_key(producer) == b"44"


def test_key_from_default_value(app: App, producer: FakeProducer) -> None:
    @app.job(key="region")
    def work(x: int, region: str = "eu") -> None: ...

    work.delay(1)
    assert sent_key(producer) == b"eu"
    work.delay(1, "us")
    assert sent_key(producer) == b"us"
    work.delay(1, region="ap")
    assert sent_key(producer) == b"ap"


def test_key_from_keyword_only_argument(app: App, producer: FakeProducer) -> None:
    @app.job(key="shard")
    def work(*items: int, shard: int = 7) -> None: ...

    work.delay(1, 2, 3)
    assert sent_key(producer) == b"7"
    work.delay(1, 2, 3, shard=3)
    assert sent_key(producer) == b"3"


def test_key_from_positional_only_argument(app: App, producer: FakeProducer) -> None:
    @app.job(key="tenant")
    def work(tenant: str, /, payload: str) -> None: ...

    work.delay("t1", "p")
    assert sent_key(producer) == b"t1"


def test_key_argument_not_given_and_without_default_means_no_key(
    app: App, producer: FakeProducer
) -> None:
    @app.job(key="order_id")
    def work(order_id: int | None = None) -> None: ...

    work.delay()
    assert sent_key(producer) is None
    work.delay(None)
    assert sent_key(producer) is None


def test_callable_key(app: App, producer: FakeProducer) -> None:
    @app.job(key=lambda customer, order, **_: f"{customer}/{order}")
    def work(customer: str, order: int, note: str = "") -> None: ...

    work.delay("c", 9, note="n")
    assert sent_key(producer) == b"c/9"
    work.delay(customer="d", order=1)
    assert sent_key(producer) == b"d/1"


def test_explicit_key_overrides_the_derived_one(app: App, producer: FakeProducer) -> None:
    @app.job(key="order_id")
    def work(order_id: int) -> None: ...

    work.apply_async([1], key="forced")
    assert sent_key(producer) == b"forced"
    work.apply_async([1], key=b"\x00raw")
    assert sent_key(producer) == b"\x00raw"
    work.apply_async([1], key=0)
    assert sent_key(producer) == b"0"
    work.apply_async([1], key=None)
    assert sent_key(producer) == b"1"


def test_explicit_key_without_a_key_spec(app: App, producer: FakeProducer) -> None:
    @app.job
    def work() -> None: ...

    work.apply_async(key="k")
    assert sent_key(producer) == b"k"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00\xff", b"\x00\xff"),
        ("plain", b"plain"),
        ("ünï", "ünï".encode()),
        (42, b"42"),
        (0, b"0"),
        (-1, b"-1"),
        (False, b"False"),
        ("", b""),
    ],
)
def test_key_bytes(value: Any, expected: bytes) -> None:
    assert key_bytes(value) == expected


def test_key_bytes_of_none_is_none() -> None:
    assert key_bytes(None) is None


@pytest.mark.parametrize(("value", "expected"), [("ünï", "ünï".encode()), (42, b"42"), (0, b"0")])
def test_derived_str_and_int_keys(
    app: App, producer: FakeProducer, value: Any, expected: bytes
) -> None:
    @app.job(key="k")
    def work(k: Any) -> None: ...

    work.delay(value)
    assert sent_key(producer) == expected


def test_derived_bytes_key_from_a_callable(app: App, producer: FakeProducer) -> None:
    # bytes are not JSON, so a bytes key comes from a callable (or an explicit key=)
    @app.job(key=lambda user_id: user_id.to_bytes(4, "big"))
    def work(user_id: int) -> None: ...

    work.delay(258)
    assert sent_key(producer) == b"\x00\x00\x01\x02"


# --- registration -----------------------------------------------------------------------------


def test_two_functions_under_one_name_is_a_configuration_error(app: App) -> None:
    @app.job(name="dup")
    def first() -> None: ...

    def second() -> None: ...

    with pytest.raises(ConfigurationError, match="'dup' is already registered"):
        app.job(name="dup")(second)
    assert app.tasks["dup"] is first


def test_registering_the_same_function_again_is_allowed(app: App) -> None:
    def work() -> None: ...

    first = app.job(name="again")(work)
    second = app.job(name="again")(work)
    assert app.tasks["again"] is second
    assert second.fn is first.fn


def test_key_naming_a_non_parameter_is_a_type_error(app: App) -> None:
    with pytest.raises(TypeError, match="key='missing' is not a parameter of"):

        @app.job(key="missing")
        def work(present: int) -> None: ...

    assert app.tasks == {}


def test_unknown_task_lookup(app: App) -> None:
    with pytest.raises(UnknownTask, match="'nope'"):
        app.task("nope")


# --- refused at enqueue --------------------------------------------------------------------


def test_payload_too_large(app: App, producer: FakeProducer) -> None:
    @app.job
    def work(blob: str) -> None: ...

    with pytest.raises(PayloadTooLarge, match="the limit is 1000") as info:
        work.delay("x" * 1000)
    assert isinstance(info.value, EnqueueError) and isinstance(info.value, ValueError)
    assert producer.calls == []


def test_payload_exactly_at_the_limit_is_accepted(app: App, producer: FakeProducer) -> None:
    @app.job
    def work(blob: str) -> None: ...

    overhead = len(encode_value(["x"], {})) - 1
    work.delay("x" * (1000 - overhead))
    assert len(producer.calls[0].value) == 1000
    with pytest.raises(PayloadTooLarge):
        work.delay("x" * (1001 - overhead))


def test_unencodable_argument_is_a_type_error_before_enqueue(
    app: App, producer: FakeProducer
) -> None:
    @app.job
    def work(a: int, when: object) -> None: ...

    with pytest.raises(TypeError, match="argument 'when'"):
        work.delay(1, when=object())
    assert producer.calls == []


def test_reserved_extra_header_is_refused_before_enqueue(app: App, producer: FakeProducer) -> None:
    @app.job
    def work() -> None: ...

    with pytest.raises(ValueError, match="reserved"):
        work.apply_async(headers={"kj-task": "spoof"})
    assert producer.calls == []


def test_unknown_job_and_topic_options_are_refused_naming_the_closest(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"'retires' \(did you mean 'retries'\?\)"):
        app.job(retires=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="configure_topic: unknown option 'colour'"):
        app.configure_topic("t", colour="red")  # type: ignore[call-arg]
    assert "t" not in app.topic_options
