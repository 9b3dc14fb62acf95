"""The package's shape: small modules, one place that builds consumers; tests mirror it.

Read from the source with `ast` (nothing imported). Import cycles have their own
guard in test_import_cycles.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"
PACKAGES = ("kafka_jobs", "celery_bridge")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def test_no_module_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_only_the_connection_client_builds_consumers() -> None:
    builders = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if called == "Consumer":
                    builders.add(name)
    assert builders == {"kafka_jobs.connection.client"}


def _package_of(folder: Path) -> str:
    """`tests/unit/processing` -> `kafka_jobs.processing`; `tests/unit/celery_bridge` -> itself."""
    parts = folder.relative_to(UNIT).parts
    return ".".join(parts if parts[0] in PACKAGES else ("kafka_jobs", *parts))


def test_unit_test_folders_mirror_packages() -> None:
    """Unit tests of `kafka_jobs/<package>/` live in `tests/unit/<package>/`, and nowhere else.

    A folder of tests is a package of the library (`celery_bridge/` for the bridge);
    tests of top-level modules stay in `tests/unit/` itself.
    """
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    folders = {path.parent for path in UNIT.rglob("test_*.py") if path.parent != UNIT}
    strays = {str(f.relative_to(ROOT)): _package_of(f) for f in folders}
    assert {folder: name for folder, name in strays.items() if name not in packages} == {}
    for folder in folders:
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"
