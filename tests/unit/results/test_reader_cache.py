"""The results reader keeps the first final outcome of a job: re-runs change nothing."""

from __future__ import annotations

from kafka_jobs.results.outcome import Outcome
from kafka_jobs.results.reader import ResultsReader


class FakeMessage:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000 + self._offset)


def test_first_final_outcome_stands_and_malformed_records_are_skipped() -> None:
    reader = ResultsReader({}, "results")  # no thread: only its record handling is used
    records = [
        Outcome("j", "t", "retrying", attempts=1).encode(),
        b"garbage",
        Outcome("j", "t", "succeeded", value=1, attempts=2).encode(),
        Outcome("j", "t", "failed", attempts=3).encode(),  # a re-run after a crash
    ]
    for offset, value in enumerate(records):
        reader._take(FakeMessage(value, offset))  # type: ignore[arg-type]
    outcome = reader._outcomes["j"]
    assert (outcome.state, outcome.value, outcome.attempts) == ("succeeded", 1, 2)
    assert reader._fetched[0] == len(records)
