"""Revoking jobs: writing revocations (`App.revoke`) and following them in workers.

A revocation is a record keyed by the job id in the compacted `revoke_topic`
(value: until when it is in force; see `kafka_jobs.processing.control`). Every
worker follows that topic from its beginning, so a job revoked before it starts
is skipped by whichever worker consumes it, now or after a restart. The same
call cancels the job in the delay tiers too, so a delayed job is not moved on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kafka_jobs.connection.follower import Follower
from kafka_jobs.delay.tiers import cancel_topic
from kafka_jobs.processing.control import JobControl, revocation_value
from kafka_jobs.wire import now_ms

if TYPE_CHECKING:
    from kafka_jobs.app import App

log = logging.getLogger(__name__)


def ensure_topic(app: App) -> None:
    """Create the revocations topic if missing (compacted, retention `revoke_ttl`)."""
    settings = app.settings
    app.create_topics(
        [settings.revoke_topic],
        partitions=1,
        config={
            "cleanup.policy": "compact,delete",
            "retention.ms": str(int(settings.revoke_ttl * 1000)),
        },
    )


def revoke(
    app: App, job_ids: Iterable[str], ttl: float | None = None, terminate: bool = False
) -> int:
    """Revoke `job_ids` for `ttl` seconds (default `revoke_ttl`); returns how many were written.

    terminate: also end a run of them in progress, on whichever worker, like a
    hard time limit (the job is settled as revoked, never retried).
    Waits until the broker acknowledged every record. Unknown ids are harmless.
    """
    settings = app.settings
    ensure_topic(app)
    until = now_ms() + int((settings.revoke_ttl if ttl is None else ttl) * 1000)
    value = revocation_value(until, terminate)
    handles = []
    for job_id in job_ids:
        key = job_id.encode()
        handles.append(app.producer.enqueue(settings.revoke_topic, job_id, value, key, []))
        # A delayed job is dropped by the dispatcher instead of being moved on.
        handles.append(
            app.producer.enqueue(
                cancel_topic(settings.delay_topic_prefix), job_id, str(until).encode(), key, []
            )
        )
    for handle in handles:
        handle.wait(settings.delivery_timeout)
    return len(handles) // 2


class Following:
    """A worker's follower of the revocations topic; `stop()` ends it."""

    def __init__(self, app: App, control: JobControl) -> None:
        settings = app.settings
        try:
            ensure_topic(app)
        except Exception as exc:  # the follower looks it up again until it exists
            log.warning("could not create the revocations topic %s: %s", settings.revoke_topic, exc)
        config = settings.consumer_settings(f"kafka-jobs-revocations-{uuid.uuid4().hex}")
        self._follower = Follower(
            config, settings.revoke_topic, control.take, name="kafka-jobs-revocations"
        )
        # Jobs revoked while no worker ran must be known before the first one starts;
        # bounded, so a slow broker delays the start rather than blocking it.
        started = time.monotonic()
        if not self._follower.wait_loaded(10.0):
            log.warning(
                "revocations not loaded after %.0fs: starting anyway", time.monotonic() - started
            )

    def stop(self) -> None:
        """Stop following."""
        self._follower.close()
