"""A job's outcome as a record of the results topic, and the exception it rebuilds.

One record per state change of a job that keeps its result, keyed by the job id
(the topic is compacted: the latest state stays). Its partition is a function of
the id (`partition_of`), so a reader knows where to look without a key index.
The value is JSON::

    {"v": 1, "id": ..., "task": ..., "state": "succeeded", "value": <JSON>,
     "error": {"type": "module.Class", "message": ..., "traceback": ...} | null,
     "attempts": 1, "started_at": <ms>, "finished_at": <ms>}

A job whose serializer is dill keeps its value as a signed dill pickle instead:
``"dill": <base64>, "sig": <hex HMAC>`` (``value`` null). The signature covers
the task, the job id and the pickle, under a domain of its own (``result:``), so
a result can never pass for a job's payload; a reader unpickles it only after
the signature verifies with its own secret.
"""

from __future__ import annotations

import base64
import importlib
import json
import traceback
import zlib
from dataclasses import dataclass
from typing import Literal

from kafka_jobs.errors import JobFailed
from kafka_jobs.signing import sign, verify
from kafka_jobs.wire import JSON

State = Literal[
    "pending", "started", "retrying", "succeeded", "failed", "dead-lettered", "expired", "revoked"
]
FINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "dead-lettered", "expired", "revoked"}
)
_FORMAT = 1
_RESULT_DOMAIN = "result:"  # a signed result is never a valid signed job payload


def partition_of(job_id: str, partitions: int) -> int:
    """The results partition of `job_id` (CRC-32 of the id, as writers and readers agree)."""
    return zlib.crc32(job_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class RemoteError:
    """An exception raised on a worker, as text."""

    type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, error: BaseException) -> RemoteError:
        """The error of `error`, with its traceback."""
        kind = type(error)
        lines = traceback.format_exception(kind, error, error.__traceback__)
        return cls(f"{kind.__module__}.{kind.__qualname__}", str(error), "".join(lines))

    def rebuild(self) -> BaseException:
        """The exception to raise on the caller: the same class when it can be made."""
        module, _, name = self.type.rpartition(".")
        try:
            kind = getattr(importlib.import_module(module), name)
            if isinstance(kind, type) and issubclass(kind, Exception):
                error = kind(self.message)
                error.__notes__ = [f"raised on a worker:\n{self.traceback}"]
                return error
        except Exception:  # not importable here, or its constructor wants other arguments
            pass
        return JobFailed(self.type, self.message, self.traceback)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's state as written by the worker that ran it."""

    job_id: str
    task: str
    state: State
    value: JSON = None
    error: RemoteError | None = None
    attempts: int = 1
    finished_at_ms: int = 0
    started_at_ms: int = 0
    """When the run that wrote this outcome started (0: unknown)."""
    pickled: bytes | None = None
    """The value as a dill pickle (jobs serialized with dill), with `signature`."""
    signature: bytes | None = None

    @classmethod
    def pickling(cls, secret: bytes | None, job_id: str, task: str, value: object) -> Outcome:
        """A succeeded outcome carrying `value` as a signed dill pickle.

        Raises `TypeError` when dill cannot pickle it, `ConfigurationError` without a secret.
        """
        import dill

        try:
            pickled = bytes(dill.dumps(value))
        except Exception as exc:
            raise TypeError(f"the value cannot be pickled: {exc}") from None
        signature = sign(secret, _RESULT_DOMAIN + task, job_id, pickled)
        return cls(job_id, task, "succeeded", pickled=pickled, signature=signature)

    def value_for(self, secret: bytes | None) -> object:
        """The job's value; a pickled one only once its signature verifies with `secret`.

        Raises `BadSignature` for a pickle that is unsigned or signed with another secret.
        """
        if self.pickled is None:
            return self.value
        verify(secret, _RESULT_DOMAIN + self.task, self.job_id, self.pickled, self.signature)
        import dill

        return dill.loads(self.pickled)

    @property
    def ready(self) -> bool:
        """True in a final state (succeeded, failed, dead-lettered)."""
        return self.state in FINAL_STATES

    def encode(self) -> bytes:
        """The record value; `TypeError` / `ValueError` when the value is not JSON."""
        error = self.error
        fields: dict[str, JSON] = {
            "v": _FORMAT,
            "id": self.job_id,
            "task": self.task,
            "state": self.state,
            "value": self.value,
            "error": None
            if error is None
            else {"type": error.type, "message": error.message, "traceback": error.traceback},
            "attempts": self.attempts,
            "started_at": self.started_at_ms,
            "finished_at": self.finished_at_ms,
        }
        if self.pickled is not None:
            fields["dill"] = base64.b64encode(self.pickled).decode()
            fields["sig"] = (self.signature or b"").decode()
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Outcome:
        """The outcome of a record value; `ValueError` when it is not one."""
        try:
            data = json.loads(raw)
            error = data.get("error")
            remote = (
                None
                if error is None
                else RemoteError(str(error["type"]), str(error["message"]), str(error["traceback"]))
            )
            state = data["state"]
            if state not in ("started", "retrying", *FINAL_STATES):
                raise ValueError(f"unknown state {state!r}")
            pickled = data.get("dill")
            return cls(
                job_id=str(data["id"]),
                task=str(data["task"]),
                state=state,
                value=data.get("value"),
                error=remote,
                attempts=int(data.get("attempts", 1)),
                finished_at_ms=int(data.get("finished_at", 0)),
                started_at_ms=int(data.get("started_at", 0)),
                pickled=None if pickled is None else base64.b64decode(pickled, validate=True),
                signature=None if pickled is None else str(data.get("sig", "")).encode(),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a job outcome: {exc!r}") from exc
