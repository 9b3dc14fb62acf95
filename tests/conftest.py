"""Markers by directory (a `pytestmark` in a conftest.py would not apply to the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
MARKERS = {
    "integration": ("integration", "bridge", "chaos"),
    "chaos": ("chaos",),
}


# Runs after every test of `celery_session_worker`: its module-scoped in-process
# Celery worker (`start_worker`) shares process-wide worker state with the session's
# in-process worker, which stops taking tasks once the second one ran beside it.
LAST = "bridge/test_result_backend.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.fspath).relative_to(HERE).parts
        for marker, folders in MARKERS.items():
            if parts and parts[0] in folders:
                item.add_marker(getattr(pytest.mark, marker))
    moved = [item for item in items if str(item.fspath).endswith(LAST)]
    if moved:
        kept = [item for item in items if not str(item.fspath).endswith(LAST)]
        items[:] = kept + moved
