"""Unit tests: pure logic, no broker, no network.

Hypothesis keeps no example database here (nothing to clean up or commit) and has
no per-example deadline, so a slow CI machine cannot turn a pass into a flake.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("kafka-jobs-unit", database=None, deadline=None)
settings.load_profile("kafka-jobs-unit")
