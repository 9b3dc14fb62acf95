"""Job control verdicts: expiry headers and revocations (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka_jobs import JobExpired, JobRevoked
from kafka_jobs.processing.control import JobControl, expires_at, revocation_value
from kafka_jobs.wire import H_EXPIRES, Envelope


@dataclass
class Record:
    """The two things `JobControl.take` reads of a record."""

    k: bytes | None
    v: bytes | None

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def _envelope(job_id: str = "j", expires: bytes | None = None) -> Envelope:
    headers = {} if expires is None else {H_EXPIRES: expires}
    return Envelope("t", job_id, (), {}, 1, 0, None, headers)


def test_expiry_is_read_from_its_header_and_a_malformed_one_never_stops_a_job() -> None:
    assert expires_at({H_EXPIRES: b"1500"}) == 1500
    assert expires_at({}) is None
    assert expires_at({H_EXPIRES: b"soon"}) is None
    control = JobControl()
    assert control.verdict(_envelope(expires=b"1000"), 999) is None
    why, error = control.verdict(_envelope(expires=b"1000"), 1000) or (None, None)
    assert why == "expired" and isinstance(error, JobExpired)


def test_a_revocation_holds_until_it_lapses_and_a_tombstone_lifts_it() -> None:
    control = JobControl()
    control.take(Record(b"j", revocation_value(2000)))  # type: ignore[arg-type]
    why, error = control.verdict(_envelope(), 1000) or (None, None)
    assert why == "revoked" and isinstance(error, JobRevoked)
    assert control.verdict(_envelope("other"), 1000) is None
    assert not control.is_revoked("j", 2000)  # lapsed
    control.take(Record(b"k", revocation_value(5000)))  # type: ignore[arg-type]
    control.take(Record(b"k", None))  # type: ignore[arg-type]
    assert not control.is_revoked("k", 0)


def test_malformed_revocations_are_skipped() -> None:
    control = JobControl()
    for record in (Record(None, b"{}"), Record(b"j", b"nope"), Record(b"j", b'{"x": 1}')):
        control.take(record)  # type: ignore[arg-type]
    assert not control.is_revoked("j", 0)
