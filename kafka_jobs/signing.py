"""HMAC-SHA256 signatures of payloads that must never be deserialised unsigned (dill)."""

from __future__ import annotations

import hashlib
import hmac

from kafka_jobs.errors import BadSignature, ConfigurationError


def _message(task: str, job_id: str, value: bytes) -> bytes:
    # The task and job id are signed too, so a valid payload cannot be replayed under another task.
    return task.encode() + b"\x00" + job_id.encode() + b"\x00" + value


def sign(secret: bytes | None, task: str, job_id: str, value: bytes) -> bytes:
    """The hex signature of a payload; a secret is required."""
    if not secret:
        raise ConfigurationError(
            "signed payloads need a signing secret (KAFKA_JOBS_SIGNING_SECRET)"
        )
    return hmac.new(secret, _message(task, job_id, value), hashlib.sha256).hexdigest().encode()


def verify(
    secret: bytes | None, task: str, job_id: str, value: bytes, signature: bytes | None
) -> None:
    """Raise `BadSignature` unless `signature` is the payload's valid signature."""
    if not secret:
        raise BadSignature("signed payload received but this worker has no signing secret")
    if not signature:
        raise BadSignature("payload requires a signature and has none")
    expected = hmac.new(secret, _message(task, job_id, value), hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, signature):
        raise BadSignature("payload signature does not verify")
