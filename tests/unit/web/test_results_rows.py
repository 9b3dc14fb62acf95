"""Dashboard results: rows of outcomes (durations, values, errors), grouping per task."""

from __future__ import annotations

import pytest

pytest.importorskip("flask")

from kafka_jobs.results.outcome import Outcome, RemoteError
from kafka_jobs.web.results import ResultRow, _by_task
from kafka_jobs.web.views import _duration


def _row(outcome: Outcome, written_at_ms: int = 0, offset: int = 0) -> ResultRow:
    return ResultRow.of(outcome, 0, offset, written_at_ms)


def test_duration_needs_both_times() -> None:
    def row(started: int, finished: int) -> ResultRow:
        return ResultRow("j", "t", "succeeded", 1, started, finished, finished, 0, 0)

    assert row(1_000, 3_500).duration_ms == 2_500
    assert row(0, 3_500).duration_ms is None  # written by a worker that did not record it
    assert row(1_000, 0).duration_ms is None  # still running
    assert row(1_000, 3_500).as_dict()["duration_ms"] == 2_500


def test_values_are_short_json_and_errors_keep_their_parts() -> None:
    long = _row(Outcome("j1", "t", "succeeded", "x" * 500))
    assert long.value is not None and len(long.value) == 200 and long.value.endswith("…")
    error = RemoteError("shop.errors.OutOfStock", "no stock", "Traceback ...")
    failed = _row(Outcome("j2", "t", "dead-lettered", error=error, attempts=3))
    assert (failed.value, failed.error_class, failed.attempts) == (None, "OutOfStock", 3)
    assert failed.as_dict()["error"] == {
        "type": "shop.errors.OutOfStock",
        "message": "no stock",
        "traceback": "Traceback ...",
    }


def test_rows_group_by_task_newest_first_within_the_limit() -> None:
    rows = [
        _row(Outcome(f"j{n}", "a" if n % 2 else "b", "succeeded", n), written_at_ms=n, offset=n)
        for n in range(7)
    ]
    grouped = _by_task(rows, per_task=2)
    assert list(grouped) == ["a", "b"]
    assert [r.job_id for r in grouped["a"]] == ["j5", "j3"]
    assert [r.job_id for r in grouped["b"]] == ["j6", "j4"]


def test_durations_read_for_people() -> None:
    assert [_duration(v) for v in (None, 850, 2_400, 210_000)] == [
        "-",
        "850 ms",
        "2.4 s",
        "3.5 min",
    ]
