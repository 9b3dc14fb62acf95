"""Offset-commit metadata: which records above the committed offset are already done.

With virtual partitions, records finish out of order; the committed offset is
the lowest unfinished one, so a new owner would re-run everything above it.
The finished ones above it travel in the commit's metadata as a bitmap relative
to the committed offset, base64 (URL-safe) and zlib-compressed, prefixed with a
version: `v1:<base64>`. Bounded: a bitmap that would not fit `MAX_CHARS` is cut,
which only means more re-runs, never a skipped record.

Metadata a job gives (`mark_as_consumed(metadata=...)`) travels after a `|`
(`v1:<base64>|<user text>`; the base64 alphabet has no `|`). Text committed by
other tools, without our prefix, is all user metadata.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable

PREFIX = "v1:"
MAX_CHARS = 4000
"""Kafka's default `offset.metadata.max.bytes` is 4096."""
_USER = "|"

_MAX_SPAN = 65_536
_MAX_BITMAP = _MAX_SPAN // 8 + 1


def compose(bitmap: str, user: str | None) -> str:
    """The commit metadata: our bitmap (may be empty) and the job's own text (may be None)."""
    if user is None:
        return bitmap
    return f"{bitmap or PREFIX}{_USER}{user}"


def split(metadata: str | None) -> tuple[str, str | None]:
    """(our bitmap part, the job's own text or None) of committed metadata."""
    if not metadata:
        return "", None
    if not metadata.startswith(PREFIX):
        return "", metadata
    bitmap, separator, user = metadata.partition(_USER)
    return bitmap, (user if separator else None)


def encode(committed: int, done_above: Iterable[int], max_chars: int = MAX_CHARS) -> str:
    """Metadata for a commit at `committed` with these finished offsets above it."""
    offsets = sorted(o - committed for o in done_above if o > committed)
    if not offsets:
        return ""
    # Bounded work: offsets further than _MAX_SPAN above the commit are left out (they
    # only run again); smaller spans are tried until the text fits.
    for limit in (min(offsets[-1] + 1, _MAX_SPAN), 8_192, 1_024, 128):
        bits = bytearray((min(limit, offsets[-1] + 1) + 7) // 8)
        for relative in offsets:
            if relative >= limit:
                break
            bits[relative // 8] |= 1 << (relative % 8)
        text = PREFIX + base64.urlsafe_b64encode(zlib.compress(bytes(bits), 9)).decode()
        if len(text) <= max_chars:
            return text
    return ""


def decode(committed: int, metadata: str | None) -> set[int]:
    """The finished offsets above `committed` that `metadata` names; empty if unknown."""
    metadata = split(metadata)[0]
    if len(metadata) <= len(PREFIX):
        return set()
    try:
        inflater = zlib.decompressobj()
        bits = inflater.decompress(base64.urlsafe_b64decode(metadata[len(PREFIX) :]), _MAX_BITMAP)
    except (binascii.Error, zlib.error, ValueError):
        return set()
    # Only a complete, checksummed stream of a size encode() can make is trusted:
    # a wrong offset here would skip a record that never ran.
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        return set()
    return {
        committed + index * 8 + bit
        for index, byte in enumerate(bits)
        if byte
        for bit in range(8)
        if byte & (1 << bit) and (index or bit)  # bit 0 is the committed offset: never done
    }
