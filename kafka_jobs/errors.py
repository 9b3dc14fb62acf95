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


class Retry(KafkaJobsError):
    """Raised by a job to be run again later: `raise Retry(countdown=6)` (Celery's `retry`).

    The run counts as an attempt. countdown: seconds to wait (None: the job's
    backoff). exc: the error the job fails with once no attempt is left (None: a
    `MaxRetriesExceeded`). max_retries: further attempts allowed after the first
    (None: the job's `retries`, or 3 when it sets none, as Celery's default).
    A wait longer than the `retry_pause_max` setting re-enqueues the job through
    the delay tiers; a shorter one pauses its partition.
    """

    def __init__(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> None:
        if countdown is not None and not (0 <= countdown < float("inf")):
            raise ValueError(f"countdown must be a finite number of seconds >= 0, not {countdown}")
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must not be negative, not {max_retries}")
        when = "after the backoff" if countdown is None else f"in {countdown:g}s"
        super().__init__(f"retry {when}" + ("" if exc is None else f": {exc!r}"))
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword arguments are not in `args`: the process pool pickles this back.
        return (type(self), (self.countdown, self.exc, self.max_retries))

    def final_error(self, attempts: int) -> BaseException:
        """What the job fails with when no attempt is left after `attempts` runs."""
        if self.exc is not None:
            return self.exc
        exceeded = MaxRetriesExceeded(f"gave up after {attempts} attempts ({self})")
        exceeded.__cause__ = self  # a dead letter's traceback shows where the retry was asked
        return exceeded


class MaxRetriesExceeded(KafkaJobsError):
    """A job raised `Retry` with no attempt left and no `exc` to fail with."""


class SoftTimeLimitExceeded(KafkaJobsError):
    """Raised inside a running job when it passes its `soft_time_limit`: time to clean up.

    Not raised while a thread job is inside C code (a blocking call such as
    `time.sleep`); it arrives when that call returns. See the README's time limits.
    """


class TimeLimitExceeded(KafkaJobsError):
    """The job passed its hard `time_limit` and was ended (dead letters: reason ``time-limit``)."""


class JobTerminated(JobRevoked):
    """The job was revoked with ``terminate=True`` while it ran, and was ended."""
