"""Jobs that must not start: expired ones (`expires=`) and revoked ones (`app.revoke`).

Revocations travel in a compacted topic (`Settings.revoke_topic`), keyed by job
id, value ``{"until": <ms>}``: every worker follows it from the beginning
(`kafka_jobs.connection.follower.Follower`) into `JobControl`, and a revoked job
that has not started yet is skipped wherever it is consumed. A revocation
lapses at ``until`` (`Settings.revoke_ttl` after it was made): the topic need not
grow forever and a worker never holds more than the revocations still in force.
A revocation of an unknown id is harmless: nothing ever matches it. One with
``"terminate": true`` also ends a run of that job in progress (`on_terminate`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from confluent_kafka import Message

from kafka_jobs.errors import JobExpired, JobRevoked, KafkaJobsError
from kafka_jobs.wire import H_EXPIRES, Envelope

log = logging.getLogger(__name__)

Skip = Literal["expired", "revoked"]


def revocation_value(until_ms: int, terminate: bool = False) -> bytes:
    """The record value of a revocation in force until `until_ms` (ending running ones too)."""
    value: dict[str, object] = {"until": until_ms}
    if terminate:
        value["terminate"] = True
    return json.dumps(value).encode()


def expires_at(headers: Mapping[str, bytes | None]) -> int | None:
    """The job's expiry (ms since the epoch) from its header map, None when it has none."""
    raw = headers.get(H_EXPIRES)
    try:
        return int(raw) if raw else None
    except ValueError:
        return None  # a malformed expiry never stops a job


class JobControl:
    """The revocations in force, and the verdict on a job about to start. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.revoked: dict[str, int] = {}  # job id -> in force until (ms); read without the lock
        # Ends a running job (`Watchdog.terminate`), for revocations with "terminate".
        self.on_terminate: Callable[[str], object] | None = None

    def take(self, message: Message) -> None:
        """Note one record of the revocations topic (the follower's callback)."""
        key = message.key()
        if not key:
            return
        job_id = key.decode(errors="replace")
        value = message.value()
        with self._lock:
            if not value:  # a tombstone lifts it
                self.revoked.pop(job_id, None)
                return
            try:
                fields = json.loads(value)
                until = int(fields["until"])
                terminate = fields.get("terminate") is True
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("revocations: skipping a malformed record for %s", job_id)
                return
            self.revoked[job_id] = until
        on_terminate = self.on_terminate
        if terminate and on_terminate is not None and until > time.time() * 1000:
            on_terminate(job_id)  # outside the lock: it ends runs, which may take a moment

    def is_revoked(self, job_id: str, now_ms: int) -> bool:
        """True while a revocation of `job_id` is in force."""
        with self._lock:
            until = self.revoked.get(job_id)
            if until is not None and until <= now_ms:
                del self.revoked[job_id]  # lapsed
                return False
            return until is not None

    def verdict(self, envelope: Envelope, now_ms: int) -> tuple[Skip, KafkaJobsError] | None:
        """Why the job must not start (with the error its outcome carries), or None."""
        if self.revoked and self.is_revoked(envelope.job_id, now_ms):
            return "revoked", JobRevoked(f"job {envelope.job_id} was revoked")
        expiry = expires_at(envelope.headers)
        if expiry is not None and expiry <= now_ms:
            return "expired", JobExpired(
                f"job {envelope.job_id} expired at {expiry} ms, {now_ms - expiry} ms before it"
                " could start"
            )
        return None
