"""`-A module[:attr]` finds the right App."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from kafka_jobs import App, ConfigurationError, default_app
from kafka_jobs.loader import load_app


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = {
        "named_app.py": "from kafka_jobs import App\napp = App()\nother = App()\n",
        "single_app.py": "from kafka_jobs import App\nmine = App()\n",
        "two_apps.py": "from kafka_jobs import App\na = App()\nb = App()\n",
        "no_app.py": "X = 1\n",
    }
    for name, source in sources.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    yield tmp_path
    for name in sources:
        sys.modules.pop(name.removesuffix(".py"), None)


def test_prefers_app_attribute(modules: Path) -> None:
    import_named = load_app("named_app")
    assert import_named is sys.modules["named_app"].app


def test_explicit_attribute(modules: Path) -> None:
    assert load_app("named_app:other") is sys.modules["named_app"].other
    with pytest.raises(ConfigurationError, match=r"not a kafka_jobs\.App"):
        load_app("named_app:missing")


def test_single_app_found_and_ambiguity_reported(modules: Path) -> None:
    assert isinstance(load_app("single_app"), App)
    with pytest.raises(ConfigurationError, match="several Apps"):
        load_app("two_apps")


def test_falls_back_to_default_app(modules: Path) -> None:
    assert load_app("no_app") is default_app()


def test_unimportable_module_is_a_configuration_error(modules: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_app("does_not_exist_anywhere")
