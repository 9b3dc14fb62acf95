"""The wire format: what encode writes, decode reads back, and every way decode refuses."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs.errors import NotDecodable, RecordRejected, UnknownFormatVersion
from kafka_jobs.wire import (
    H_ATTEMPT,
    H_CONTENT_TYPE,
    H_ENQUEUED_AT,
    H_ID,
    H_KEY,
    H_TASK,
    H_VERSION,
    Headers,
    decode,
    encode_headers,
    encode_value,
    header_map,
    new_job_id,
    read_task_name,
)

REQUIRED = [H_VERSION, H_TASK, H_ID, H_ATTEMPT, H_ENQUEUED_AT, H_CONTENT_TYPE]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def valid_headers(**changes: bytes | None) -> Headers:
    """Headers of a well-formed job, with some values replaced (None: left out)."""
    headers = dict(encode_headers("tasks.add", new_job_id(), None, attempt=1, enqueued_at_ms=1))
    for name, value in changes.items():
        headers[name.replace("_", "-")] = value
    return [(name, value) for name, value in headers.items() if value is not None]


GOOD_VALUE = encode_value([1, 2], {})


# --- round trip -------------------------------------------------------------------


def test_round_trip_of_every_field() -> None:
    job_id = new_job_id()
    value = encode_value([1, "two", [3.5, None]], {"flag": True, "nested": {"a": [1]}})
    headers = encode_headers(
        "billing.charge",
        job_id,
        b"customer-7",
        attempt=3,
        enqueued_at_ms=1_700_000_000_123,
        extra={"tenant": "acme", "trace": b"\x00\xff"},
    )
    envelope = decode(value, headers)
    assert envelope.task == "billing.charge"
    assert envelope.job_id == job_id
    assert envelope.args == (1, "two", [3.5, None])
    assert envelope.kwargs == {"flag": True, "nested": {"a": [1]}}
    assert envelope.attempt == 3
    assert envelope.enqueued_at_ms == 1_700_000_000_123
    assert envelope.key == b"customer-7"
    assert envelope.headers["tenant"] == b"acme"
    assert envelope.headers["trace"] == b"\x00\xff"


def test_headers_are_ours_first_then_extra_and_all_bytes() -> None:
    headers = encode_headers("t", "id", b"k", enqueued_at_ms=5, extra={"x-user": "u"})
    names = [name for name, _ in headers]
    assert names == [*REQUIRED, H_KEY, "x-user"]
    assert all(isinstance(value, bytes) for _, value in headers)
    assert dict(headers)[H_VERSION] == b"1"
    assert dict(headers)[H_CONTENT_TYPE] == b"application/json"


def test_no_key_header_without_a_key() -> None:
    headers = encode_headers("t", "id", None)
    assert H_KEY not in dict(headers)
    assert decode(GOOD_VALUE, headers).key is None


def test_enqueued_at_defaults_to_now() -> None:
    before = datetime.datetime.now(datetime.UTC).timestamp() * 1000
    envelope = decode(GOOD_VALUE, encode_headers("t", "id", None))
    after = datetime.datetime.now(datetime.UTC).timestamp() * 1000
    assert before - 1 <= envelope.enqueued_at_ms <= after + 1


def test_key_header_wins_over_record_key_and_record_key_is_the_fallback() -> None:
    with_header = encode_headers("t", "id", b"from-header")
    assert decode(GOOD_VALUE, with_header, key=b"record-key").key == b"from-header"
    without = encode_headers("t", "id", None)
    assert decode(GOOD_VALUE, without, key=b"record-key").key == b"record-key"


def test_missing_kwargs_defaults_to_empty() -> None:
    envelope = decode(b'{"args": [1]}', valid_headers())
    assert envelope.args == (1,)
    assert envelope.kwargs == {}


@pytest.mark.parametrize("value", [b"{}", b'{"kwargs": {"a": 1}}'])
def test_missing_args_defaults_to_empty(value: bytes) -> None:
    envelope = decode(value, valid_headers())
    assert envelope.args == ()


def test_headers_may_be_a_mapping_with_str_values() -> None:
    headers = {name: value.decode() for name, value in valid_headers() if value is not None}
    envelope = decode(GOOD_VALUE, headers)
    assert envelope.task == "tasks.add"
    assert envelope.args == (1, 2)


def test_repeated_header_names_first_wins() -> None:
    headers = [*valid_headers(), (H_TASK, b"spoofed")]
    assert decode(GOOD_VALUE, headers).task == "tasks.add"
    assert header_map([("a", b"1"), ("a", b"2")]) == {"a": b"1"}


def test_read_task_name() -> None:
    assert read_task_name(valid_headers()) == "tasks.add"
    assert read_task_name([]) is None
    assert read_task_name(None) is None
    assert read_task_name([(H_TASK, b"\xff")]) is None


def test_job_ids_are_unique_hex() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@given(
    args=st.lists(json_values, max_size=5),
    kwargs=st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=5),
    key=st.none() | st.binary(max_size=20),
    task=st.text(min_size=1, max_size=30),
    attempt=st.integers(1, 10**6),
    enqueued_at=st.integers(0, 2**62),
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda n: not n.startswith("kj-") and n != H_CONTENT_TYPE),
        st.text(max_size=10) | st.binary(max_size=10),
        max_size=4,
    ),
)
def test_round_trip_property(
    args: list[Any],
    kwargs: dict[str, Any],
    key: bytes | None,
    task: str,
    attempt: int,
    enqueued_at: int,
    extra: dict[str, str | bytes],
) -> None:
    job_id = new_job_id()
    headers = encode_headers(task, job_id, key, attempt, enqueued_at, extra)
    envelope = decode(encode_value(args, kwargs), headers)
    assert (envelope.task, envelope.job_id, envelope.key) == (task, job_id, key)
    assert (envelope.attempt, envelope.enqueued_at_ms) == (attempt, enqueued_at)
    assert envelope.args == tuple(args)
    assert envelope.kwargs == kwargs
    for name, value in extra.items():
        assert envelope.headers[name] == (value.encode() if isinstance(value, str) else value)


# --- what encode refuses --------------------------------------------------------------


@pytest.mark.parametrize("name", [H_TASK, H_ID, H_KEY, H_VERSION, "kj-anything", H_CONTENT_TYPE])
def test_reserved_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match=f"header '{name}' is reserved"):
        encode_headers("t", "id", None, extra={name: "x"})


def test_type_error_names_the_positional_index() -> None:
    with pytest.raises(TypeError, match=r"positional argument 2 \(object\)"):
        encode_value([1, "ok", object()], {})


def test_type_error_names_the_keyword() -> None:
    with pytest.raises(TypeError, match=r"argument 'when' \(datetime\)"):
        encode_value([1], {"ok": 2, "when": datetime.datetime(2024, 1, 1)})


def test_type_error_names_the_top_level_argument_holding_a_bad_value() -> None:
    with pytest.raises(TypeError, match=r"positional argument 0 \(list\)"):
        encode_value([[1, {2}]], {})
    with pytest.raises(TypeError, match=r"argument 'blob' \(bytes\)"):
        encode_value([], {"blob": b"raw"})


def test_circular_argument_is_a_type_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="positional argument 0"):
        encode_value([loop], {})


def test_encoded_value_is_compact_json() -> None:
    value = encode_value((1, 2), {"a": "b"})
    assert value == b'{"args":[1,2],"kwargs":{"a":"b"}}'
    assert json.loads(value) == {"args": [1, 2], "kwargs": {"a": "b"}}


# --- what decode refuses ----------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_header_is_not_decodable(name: str) -> None:
    headers = [(n, v) for n, v in valid_headers() if n != name]
    with pytest.raises(NotDecodable, match=f"missing header '{name}'"):
        decode(GOOD_VALUE, headers)


@pytest.mark.parametrize("name", REQUIRED)
def test_header_with_null_value_counts_as_missing(name: str) -> None:
    headers = [(n, None if n == name else v) for n, v in valid_headers()]
    with pytest.raises(NotDecodable, match="missing header"):
        decode(GOOD_VALUE, headers)


@pytest.mark.parametrize("raw", [None, [], {}])
def test_no_headers_at_all_is_not_decodable(raw: Any) -> None:
    with pytest.raises(NotDecodable):
        decode(GOOD_VALUE, raw)


@pytest.mark.parametrize("version", [b"2", b"0", b"v1", b""])
def test_wrong_version_is_unknown_format_version(version: bytes) -> None:
    with pytest.raises(UnknownFormatVersion) as info:
        decode(GOOD_VALUE, valid_headers(kj_version=version))
    assert info.value.reason == "unknown-format-version"
    assert not isinstance(info.value, NotDecodable)


@pytest.mark.parametrize("content_type", [b"application/xml", b"APPLICATION/JSON", b""])
def test_bad_content_type_is_not_decodable(content_type: bytes) -> None:
    with pytest.raises(NotDecodable, match="content type"):
        decode(GOOD_VALUE, valid_headers(content_type=content_type))


@pytest.mark.parametrize("name", [H_TASK, H_ID, H_ATTEMPT, H_ENQUEUED_AT])
def test_non_utf8_header_is_not_decodable(name: str) -> None:
    headers = [(n, b"\xff\xfe" if n == name else v) for n, v in valid_headers()]
    with pytest.raises(NotDecodable, match="malformed header"):
        decode(GOOD_VALUE, headers)


@pytest.mark.parametrize("attempt", [b"one", b"1.0", b"", b"0x1"])
def test_non_integer_attempt_is_not_decodable(attempt: bytes) -> None:
    with pytest.raises(NotDecodable, match="malformed header"):
        decode(GOOD_VALUE, valid_headers(kj_attempt=attempt))


def test_non_integer_enqueued_at_is_not_decodable() -> None:
    with pytest.raises(NotDecodable, match="malformed header"):
        decode(GOOD_VALUE, valid_headers(kj_enqueued_at=b"yesterday"))


@pytest.mark.parametrize("attempt", [b"0", b"-1"])
def test_attempt_below_one_is_not_decodable(attempt: bytes) -> None:
    with pytest.raises(NotDecodable, match="attempt below 1"):
        decode(GOOD_VALUE, valid_headers(kj_attempt=attempt))


@pytest.mark.parametrize("change", [{"kj_task": b""}, {"kj_id": b""}])
def test_empty_task_or_id_is_not_decodable(change: dict[str, bytes]) -> None:
    with pytest.raises(NotDecodable, match="empty task name"):
        decode(GOOD_VALUE, valid_headers(**change))


def test_value_none_is_not_decodable() -> None:
    with pytest.raises(NotDecodable, match="no value"):
        decode(None, valid_headers())


@pytest.mark.parametrize("value", [b"", b"{", b"not json", b"\xff\xfe\xfd", b'{"args": [1,]}'])
def test_value_not_json_is_not_decodable(value: bytes) -> None:
    with pytest.raises(NotDecodable, match="not JSON"):
        decode(value, valid_headers())


@pytest.mark.parametrize("value", [b"[]", b"1", b'"text"', b"null", b"[1, 2]"])
def test_value_json_but_not_an_object_is_not_decodable(value: bytes) -> None:
    with pytest.raises(NotDecodable, match="not a JSON object"):
        decode(value, valid_headers())


@pytest.mark.parametrize("args", ["{}", '"1,2"', "1", "null"])
def test_args_not_a_list_is_not_decodable(args: str) -> None:
    with pytest.raises(NotDecodable, match="'args' must be a list"):
        decode(f'{{"args": {args}, "kwargs": {{}}}}'.encode(), valid_headers())


@pytest.mark.parametrize("kwargs", ["[]", '"a=1"', "1", "null"])
def test_kwargs_not_an_object_is_not_decodable(kwargs: str) -> None:
    with pytest.raises(NotDecodable, match="'kwargs' an object"):
        decode(f'{{"args": [], "kwargs": {kwargs}}}'.encode(), valid_headers())


def test_rejections_carry_their_reason_code() -> None:
    with pytest.raises(RecordRejected) as info:
        decode(None, valid_headers())
    assert info.value.reason == "not-decodable"


def test_deeply_nested_value_is_rejected_not_a_crash() -> None:
    depth = 5_000  # a 10 kB record, far below max_payload_bytes
    value = b'{"args": [' + b"[" * depth + b"]" * depth + b"]}"
    with pytest.raises(NotDecodable):
        decode(value, valid_headers())


# --- decode never crashes ---------------------------------------------------------------

header_names = st.sampled_from([*REQUIRED, H_KEY]) | st.text(max_size=12)
header_values = (
    st.none()
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.sampled_from([b"1", b"0", b"-3", b"2", b"application/json", b"tasks.add", b"\xff"])
)
record_values = (
    st.none()
    | st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda a, k: json.dumps({"args": a, "kwargs": k}).encode(), json_values, json_values
    )
)


@given(
    value=record_values,
    headers=st.lists(st.tuples(header_names, header_values), max_size=10),
    valid_base=st.booleans(),
    key=st.none() | st.binary(max_size=10),
)
def test_decode_only_ever_raises_record_rejected(
    value: bytes | None,
    headers: list[tuple[str, bytes | str | None]],
    valid_base: bool,
    key: bytes | None,
) -> None:
    # With valid_base the random headers come after valid ones and can only add
    # headers (first wins), so decoding gets as far as the value.
    raw = [*valid_headers(), *headers] if valid_base else headers
    try:
        envelope = decode(value, raw, key)
    except RecordRejected:
        return
    assert envelope.attempt >= 1
    assert envelope.task and envelope.job_id
    assert isinstance(envelope.args, tuple) and isinstance(envelope.kwargs, dict)
