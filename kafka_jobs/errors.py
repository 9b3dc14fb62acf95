"""The exception hierarchy: every error kafka-jobs raises derives from `KafkaJobsError`."""

from __future__ import annotations


class KafkaJobsError(Exception):
    """Base class of every error raised by kafka-jobs."""


class ConfigurationError(KafkaJobsError, ValueError):
    """A setting is missing, malformed, or contradicts another one."""


class EnqueueError(KafkaJobsError):
    """A job could not be handed to the producer."""


class PayloadTooLarge(EnqueueError, ValueError):
    """The encoded job is larger than the configured `max_payload_bytes`."""


class DeliveryError(KafkaJobsError):
    """The broker did not acknowledge one or more enqueued jobs.

    `failures` holds one `(job_id, reason)` pair per failed delivery.
    """

    def __init__(self, message: str, failures: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.failures: list[tuple[str, str]] = failures or []


class DeliveryTimeout(DeliveryError):
    """Deliveries were still pending when the flush or wait timed out."""


class RecordRejected(KafkaJobsError):
    """A consumed record cannot become a job. Subclasses name the reason.

    `reason` is a short stable code that travels in dead-letter headers.
    """

    reason = "rejected"


class NotDecodable(RecordRejected):
    """The record's headers or value are not a well-formed job."""

    reason = "not-decodable"


class UnknownFormatVersion(RecordRejected):
    """The record was written by a wire-format version this worker does not know."""

    reason = "unknown-format-version"


class UnknownTask(RecordRejected):
    """The record names a task that this worker has not registered."""

    reason = "unknown-task"


class BadSignature(RecordRejected):
    """A signed payload is unsigned or its signature does not verify."""

    reason = "bad-signature"


class RecordTooLarge(RecordRejected):
    """The record's value exceeds the worker's payload limit."""

    reason = "payload-too-large"


class JobFailed(KafkaJobsError):
    """A job failed on a worker and its exception class cannot be rebuilt here.

    `remote_type` is the exception's ``module.QualName``, `remote_message` its
    message and `remote_traceback` the worker's formatted traceback.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str) -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class ResultUnavailable(KafkaJobsError):
    """No outcome of the job was found in time (unknown id, expired, or still running)."""


class ResultNotKept(KafkaJobsError, ValueError):
    """The job's result is not written (its task does not set ``keep_result``)."""


class JobExpired(KafkaJobsError):
    """The job was due to start after its `expires` time, so it did not run."""


class JobRevoked(KafkaJobsError):
    """The job was revoked (`app.revoke`, `handle.revoke()`) before it started."""
