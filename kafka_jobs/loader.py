"""Finds the App of a user module named on the command line (`-A pkg.module[:attr]`).

This module does not import `kafka_jobs.app`: the App builds workers, whose
process pool loads the app in its children through this module. Instead
`kafka_jobs.app` introduces its App class and default app here (`recognise`)
as it is imported, which importing any `kafka_jobs` module does first (the
package imports it).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from kafka_jobs.errors import ConfigurationError, KafkaJobsError

if TYPE_CHECKING:
    from kafka_jobs.app import App

_app_class: type[App] | None = None
_default_app: Callable[[], App] | None = None


def recognise(app_class: type[App], default_app: Callable[[], App]) -> None:
    """Called by `kafka_jobs.app` on import: what an App is, and the default one."""
    global _app_class, _default_app
    _app_class, _default_app = app_class, default_app


def load_app(spec: str) -> App:
    """Import `pkg.module` (registering its tasks) and return its App.

    `pkg.module:name` picks an attribute; otherwise the module's `app` if it is an
    App, else its only App, else the default app (tasks made with `@kafka_job`).
    """
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`, find the user's package
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    app_class, default_app = _app_class, _default_app
    if app_class is None or default_app is None:  # not reached: the package imports the App
        raise KafkaJobsError("kafka_jobs.app is not imported")
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, app_class):
            raise ConfigurationError(f"{spec!r} is not a kafka_jobs.App")
        return found
    named = getattr(module, "app", None)
    if isinstance(named, app_class):
        return named
    apps = [value for value in vars(module).values() if isinstance(value, app_class)]
    if len(apps) > 1:
        raise ConfigurationError(
            f"{module_name!r} defines several Apps; name one as {module_name}:attr"
        )
    return apps[0] if apps else default_app()
