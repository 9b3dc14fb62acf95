"""Finds the App of a user module named on the command line (`-A pkg.module[:attr]`)."""

from __future__ import annotations

import importlib
import os
import sys

from kafka_jobs.app import App, default_app
from kafka_jobs.errors import ConfigurationError


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
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, App):
            raise ConfigurationError(f"{spec!r} is not a kafka_jobs.App")
        return found
    if isinstance(getattr(module, "app", None), App):
        app: App = module.app
        return app
    apps = [value for value in vars(module).values() if isinstance(value, App)]
    if len(apps) > 1:
        raise ConfigurationError(
            f"{module_name!r} defines several Apps; name one as {module_name}:attr"
        )
    return apps[0] if apps else default_app()
