"""Outcome records: encoding, decoding, partitions, and the exceptions they rebuild."""

from __future__ import annotations

import pytest

from kafka_jobs import JobFailed
from kafka_jobs.results.outcome import Outcome, RemoteError, partition_of


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_an_outcome_survives_encoding() -> None:
    error = RemoteError.of(_raised(KeyError("k")))
    outcome = Outcome("j1", "t", "failed", None, error, attempts=3, finished_at_ms=5)
    assert Outcome.decode(outcome.encode()) == outcome
    assert outcome.ready and not Outcome("j", "t", "retrying").ready


def test_malformed_and_unknown_states_are_refused() -> None:
    with pytest.raises(ValueError):
        Outcome.decode(b'{"id": "x"}')
    with pytest.raises(ValueError):
        Outcome.decode(b'{"id": "x", "task": "t", "state": "exploded"}')
    with pytest.raises(ValueError):
        Outcome.decode(b"not json")


def test_partition_is_stable_and_spread() -> None:
    assert partition_of("abc", 6) == partition_of("abc", 6)
    assert len({partition_of(f"job-{n}", 6) for n in range(100)}) == 6


def test_importable_errors_come_back_as_themselves_others_as_job_failed() -> None:
    rebuilt = RemoteError.of(_raised(ValueError("bad 7"))).rebuild()
    assert type(rebuilt) is ValueError and str(rebuilt) == "bad 7"
    assert "raised on a worker" in rebuilt.__notes__[0]

    class Local(Exception):
        pass

    remote = RemoteError.of(_raised(Local("here")))
    failed = remote.rebuild()
    assert isinstance(failed, JobFailed)
    assert failed.remote_type.endswith("Local") and failed.remote_message == "here"
