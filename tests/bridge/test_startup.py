"""A Celery project that sets only `broker_url` starts a worker Celery's way, on any broker."""

from __future__ import annotations

import subprocess
import sys

from kafka_jobs.testing import BrokerInfo
from tests.bridge.conftest import ROOT


def test_celerys_test_worker_starts_with_default_settings(kafka_broker: BrokerInfo) -> None:
    # start_worker fails unless the worker answers celery.ping within Celery's 10 s:
    # the group must form within that with the bridge's default group settings.
    # Its own process: start_worker makes its app the current and default one.
    done = subprocess.run(
        [sys.executable, "-m", "tests.bridge.startup_check", kafka_broker.bootstrap_servers],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
