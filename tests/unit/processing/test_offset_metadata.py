"""Offset-commit metadata: finished offsets above the commit, encoded and decoded."""

from __future__ import annotations

import base64
import random
import tracemalloc
import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kafka_jobs.processing.offset_metadata import MAX_CHARS, PREFIX, decode, encode

committed_offsets = st.integers(min_value=0, max_value=2**62)


def wrap(payload: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(payload).decode()


def assert_prefix_cut(decoded: set[int], wanted: set[int]) -> None:
    """`decoded` is the offsets of `wanted` below some cut: never one above a missing one."""
    assert decoded <= wanted
    missing = wanted - decoded
    if decoded and missing:
        assert max(decoded) < min(missing)


# --- encode --------------------------------------------------------------------------------


def test_nothing_done_above_encodes_to_empty() -> None:
    assert encode(10, []) == ""
    assert encode(10, set()) == ""
    assert encode(10, [3, 9, 10]) == ""  # at or below the commit: not "above"


def test_format_is_prefixed_urlsafe_base64_of_zlib_bitmap() -> None:
    text = encode(100, [101, 103, 108])
    assert text.startswith("v1:")
    bits = zlib.decompress(base64.urlsafe_b64decode(text[len(PREFIX) :]))
    # Bit i of byte i // 8 is offset committed + i.
    assert bits == bytes([0b00001010, 0b00000001])


def test_encode_accepts_any_iterable_and_ignores_duplicates() -> None:
    assert encode(5, iter([7, 6, 7])) == encode(5, {6, 7})


def test_round_trip_simple() -> None:
    assert decode(100, encode(100, [101, 102, 150, 99, 100])) == {101, 102, 150}


def test_round_trip_at_large_offsets() -> None:
    committed = 2**62
    done = {committed + 1, committed + 1000, committed + 60_000}
    assert decode(committed, encode(committed, done)) == done


def test_decode_is_relative_to_the_given_commit() -> None:
    text = encode(0, [1, 2])
    assert decode(10, text) == {11, 12}


def test_dense_bitmap_too_big_is_cut_not_dropped() -> None:
    rng = random.Random(0)
    done = {o for o in range(1, 300_000) if rng.random() < 0.5}
    text = encode(0, done)
    assert 0 < len(text) <= MAX_CHARS
    decoded = decode(0, text)
    assert decoded, "a cut bitmap still keeps the lowest offsets"
    assert decoded < done
    assert_prefix_cut(decoded, done)
    # The cut is one of the fallback sizes.
    assert max(decoded) < 65_536


def test_worst_case_dense_random_still_fits() -> None:
    rng = random.Random(1)
    done = {o for o in range(1, 2_000_000) if rng.random() < 0.5}
    text = encode(0, done)
    assert len(text) <= MAX_CHARS
    assert_prefix_cut(decode(0, text), done)


# --- properties ----------------------------------------------------------------------------


@given(
    committed=committed_offsets,
    relative=st.sets(st.integers(min_value=-50, max_value=16_000), max_size=300),
)
def test_round_trip_is_exact_when_the_bitmap_fits(committed: int, relative: set[int]) -> None:
    # 16,000 bits = 2,000 bytes: fits 4,000 base64 characters even incompressible.
    offsets = {committed + r for r in relative if committed + r >= 0}
    text = encode(committed, offsets)
    assert len(text) <= MAX_CHARS
    assert decode(committed, text) == {o for o in offsets if o > committed}


@settings(max_examples=30)
@given(
    committed=committed_offsets,
    relative=st.sets(st.integers(min_value=1, max_value=65_535), min_size=1, max_size=30),
)
def test_round_trip_is_exact_for_sparse_offsets_within_the_span(
    committed: int, relative: set[int]
) -> None:
    # Within 65 536 offsets of the commit a few bits always fit; further ones are left out.
    offsets = {committed + r for r in relative}
    text = encode(committed, offsets)
    assert len(text) <= MAX_CHARS
    assert decode(committed, text) == offsets


@settings(max_examples=60)
@given(
    committed=committed_offsets,
    relative=st.one_of(
        st.sets(st.integers(min_value=-1000, max_value=200_000), max_size=2000),
        st.builds(
            lambda seed, density, span: {
                o for o in range(1, span) if random.Random(seed).random() < density
            },
            st.integers(0, 2**32),
            st.floats(0.05, 0.95),
            st.integers(1, 150_000),
        ),
    ),
)
def test_decode_of_encode_is_a_bounded_prefix_subset(committed: int, relative: set[int]) -> None:
    offsets = {committed + r for r in relative if committed + r >= 0}
    text = encode(committed, offsets)
    assert len(text) <= MAX_CHARS
    decoded = decode(committed, text)
    assert all(o > committed for o in decoded)
    assert_prefix_cut(decoded, {o for o in offsets if o > committed})


# --- garbage -------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, "", "v1:", "v1", "hello", "V1:eJwDAAAAAAE="])
def test_empty_or_unknown_metadata_decodes_to_nothing(metadata: str | None) -> None:
    assert decode(0, metadata) == set()


def test_wrong_prefix_decodes_to_nothing() -> None:
    good = encode(0, [1, 2, 3])
    payload = good[len(PREFIX) :]
    for prefix in ("v2:", "v0:", "", "x1:", " v1:"):
        assert decode(0, prefix + payload) == set()


@pytest.mark.parametrize(
    "payload",
    [
        "a",  # bad padding
        "abc",  # bad padding
        "!!!!",  # no base64 characters at all
        "éééé",  # non-ASCII
        "AAAA",  # base64 of zeros: no zlib header
        base64.urlsafe_b64encode(b"not zlib at all").decode(),
        base64.urlsafe_b64encode(zlib.compress(b"\xff" * 10))[:-6].decode() + "%%",
    ],
)
def test_bad_base64_or_zlib_decodes_to_nothing(payload: str) -> None:
    assert decode(0, PREFIX + payload) == set()


def test_zlib_bomb_is_refused() -> None:
    # Would inflate to 2 MiB (past the 1 MiB limit), every bit set.
    bomb = wrap(zlib.compress(b"\xff" * (2 << 20), 9))
    assert len(bomb) <= MAX_CHARS, "small payload"
    assert decode(0, bomb) == set()


def test_corrupt_checksum_decodes_to_nothing() -> None:
    raw = bytearray(zlib.compress(b"\x02\x04", 9))
    raw[-1] ^= 0xFF
    assert decode(0, wrap(bytes(raw))) == set()


@given(text=st.text(max_size=200))
def test_random_text_without_the_prefix_decodes_to_nothing(text: str) -> None:
    assume(not text.startswith(PREFIX))
    assert decode(7, text) == set()


@given(payload=st.binary(min_size=0, max_size=200))
def test_random_bytes_without_a_zlib_header_decode_to_nothing(payload: bytes) -> None:
    # zlib rejects these at the two-byte header (method 8, header checksum % 31 == 0).
    valid_header = (
        len(payload) >= 2
        and payload[0] & 0x0F == 8
        and payload[0] >> 4 <= 7
        and (payload[0] * 256 + payload[1]) % 31 == 0
    )
    assume(not valid_header)
    assert decode(7, wrap(payload)) == set()


@given(text=st.text(alphabet="!#$%&()*,.;<>?@[]^`{|}~ ", max_size=100))
def test_prefix_with_no_base64_characters_decodes_to_nothing(text: str) -> None:
    assert decode(7, PREFIX + text) == set()


# --- bugs ----------------------------------------------------------------------------------


def test_far_offset_does_not_make_the_metadata_unreadable() -> None:
    committed = 100
    done = {committed + 1, committed + 9_000_000}
    text = encode(committed, done)
    assert 0 < len(text) <= MAX_CHARS  # passes: encode thinks it fits
    assert committed + 1 in decode(committed, text)


def test_encode_memory_does_not_grow_with_the_offset_gap() -> None:
    tracemalloc.start()
    try:
        encode(0, {1, 2**28})  # a 32 MiB bitmap today; a gap of 2**40 needs 128 GiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


_GARBAGE = b"x\x9c;\xdc\x80\x1fH\xaau\x84\x08Op\x8cI]\xd2\x9a\x06\xb8\xa3,"
"""A valid zlib header followed by 20 random bytes: not a complete zlib stream."""


def _truncated() -> bytes:
    """A real encoding without its last 4 bytes (the adler32 checksum)."""
    return base64.urlsafe_b64decode(encode(1000, [1001, 1005, 1009])[len(PREFIX) :])[:-4]


@pytest.mark.parametrize("payload", [_GARBAGE, _truncated()], ids=["garbage", "truncated"])
def test_incomplete_zlib_stream_decodes_to_nothing(payload: bytes) -> None:
    inflater = zlib.decompressobj()
    assert inflater.decompress(payload) and not inflater.eof  # output, but no stream end
    assert decode(1000, wrap(payload)) == set()


def test_decode_never_returns_the_committed_offset() -> None:
    metadata = wrap(zlib.compress(b"\x01\x02"))  # bit 0 and bit 9
    assert decode(50, metadata) == {59}
