"""The supervisor's pure parts: child arguments and the process count."""

from __future__ import annotations

import os

import pytest

from kafka_jobs.supervisor import child_arguments, process_count, resident_mb


def test_children_get_the_arguments_without_the_supervisors_own() -> None:
    argv = [
        *("--log-level", "warning", "worker", "-A", "app", "--processes", "2"),
        *("--max-memory-per-child=300", "--health-port", "8080", "--health-host", "0.0.0.0"),
        *("--health-stall", "5", "-c", "8"),
    ]
    assert child_arguments(argv) == [
        *("--log-level", "warning", "worker", "-A", "app", "--health-stall", "5", "-c", "8"),
    ]


def test_process_count_is_positive_or_the_cores() -> None:
    assert process_count("3") == 3
    assert process_count("auto") == (os.cpu_count() or 1)
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError):
            process_count(bad)


def test_resident_memory_of_this_process_and_of_none() -> None:
    assert resident_mb(os.getpid()) > 1
    assert resident_mb(2**22 + 7) == 0.0  # no such pid
