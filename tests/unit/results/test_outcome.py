"""Outcome records: encoding, decoding, partitions, and the exceptions they rebuild."""

from __future__ import annotations

import dataclasses

import pytest

from kafka_jobs import BadSignature, JobFailed
from kafka_jobs.results.outcome import Outcome, RemoteError, partition_of
from kafka_jobs.signing import verify


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


def test_a_started_outcome_is_not_ready_and_keeps_its_time() -> None:
    started = Outcome("j", "t", "started", attempts=2, started_at_ms=7)
    assert Outcome.decode(started.encode()) == started
    assert not started.ready


def test_a_pickled_value_opens_only_with_its_secret_and_task() -> None:
    outcome = Outcome.decode(Outcome.pickling(b"k", "j", "t", {1, 2}).encode())
    assert outcome.value_for(b"k") == {1, 2}
    for secret in (b"other", None):
        with pytest.raises(BadSignature):
            outcome.value_for(secret)
    with pytest.raises(BadSignature):  # the signature binds the task and the job id
        dataclasses.replace(outcome, task="u").value_for(b"k")
    with pytest.raises(BadSignature):
        dataclasses.replace(outcome, signature=None).value_for(b"k")


def test_a_pickled_value_never_verifies_as_a_job_payload() -> None:
    outcome = Outcome.pickling(b"k", "j", "t", [1])
    assert outcome.pickled is not None
    with pytest.raises(BadSignature):
        verify(b"k", "t", "j", outcome.pickled, outcome.signature)
