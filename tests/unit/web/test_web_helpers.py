"""Dashboard helpers: the lag chart, value display, loopback check, lag history horizon."""

from __future__ import annotations

import pytest

pytest.importorskip("flask")

from kafka_jobs.instrumentation.status import PartitionStatus
from kafka_jobs.web.data import GroupView, LagHistory, Overview
from kafka_jobs.web.server import is_loopback
from kafka_jobs.web.views import _show_value, sparkline


def test_sparkline_scales_time_and_lag_into_the_box() -> None:
    svg = sparkline([(100.0, 0), (105.0, 50), (110.0, 100)], width=102, height=52)
    assert 'points="1.0,51.0 51.0,26.0 101.0,1.0"' in svg
    assert "<polyline" not in sparkline([(100.0, 3)])  # one point draws nothing


def test_values_show_as_pretty_json_text_or_base64() -> None:
    assert _show_value(b'{"args": [1]}') == '{\n  "args": [\n    1\n  ]\n}'
    assert _show_value(b"plain") == "plain"
    assert _show_value(b"\xff\xfe") == "base64: //4="
    assert _show_value(None) == "(no value)"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_lag_history_sums_partitions_and_forgets_old_samples() -> None:
    history = LagHistory(seconds=60)

    def overview(at: float, lags: list[int]) -> Overview:
        rows = [PartitionStatus("g", "t", p, 0, 0, lag, "-", "jobs") for p, lag in enumerate(lags)]
        return Overview(at, [GroupView("g", [], rows, [], [])], [], 0)

    history.add(overview(1000.0, [3, 4]))
    history.add(overview(1030.0, [1, 1]))
    history.add(overview(1070.0, [0, 5]))
    assert history.points("g", "t") == [(1030.0, 2), (1070.0, 5)]
