"""Markers by directory (a `pytestmark` in a conftest.py would not apply to the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
MARKERS = {
    "integration": ("integration", "bridge", "chaos"),
    "chaos": ("chaos",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.fspath).relative_to(HERE).parts
        for marker, folders in MARKERS.items():
            if parts and parts[0] in folders:
                item.add_marker(getattr(pytest.mark, marker))
