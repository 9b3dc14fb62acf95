"""The test suite; `ROOT` is the repository's root (the cwd of subprocess workers)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
