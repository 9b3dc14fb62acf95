"""kafka-jobs: background jobs on Apache Kafka.

    from kafka_jobs import kafka_job

    @kafka_job(topic="orders", key="order_id")
    def process_order(order_id: int) -> None: ...

    process_order.delay(42)
    kafka_jobs.flush()

Run the jobs with `kafka-jobs worker -A yourmodule`.
"""

from kafka_jobs.app import App, default_app, flush, kafka_job, result
from kafka_jobs.canvas import (
    Chain,
    ChainResult,
    Chord,
    ChordResult,
    Group,
    GroupResult,
    Signature,
    chain,
    chord,
    group,
)
from kafka_jobs.context import JobContext, current_job
from kafka_jobs.errors import (
    BadSignature,
    ConfigurationError,
    DeliveryError,
    DeliveryTimeout,
    EnqueueError,
    JobExpired,
    JobFailed,
    JobRevoked,
    JobTerminated,
    KafkaJobsError,
    MaxRetriesExceeded,
    NotDecodable,
    PayloadTooLarge,
    RecordRejected,
    RecordTooLarge,
    ResultNotKept,
    ResultUnavailable,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    UnknownFormatVersion,
    UnknownTask,
)
from kafka_jobs.instrumentation.events import Event
from kafka_jobs.options import JobOptions, TopicSettings
from kafka_jobs.processing.failures import (
    Disposition,
    Failure,
    FailureHandler,
    LogFailures,
    Requeued,
    RetryLater,
    RetryThenDeadLetter,
)
from kafka_jobs.processing.jobs import Job
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.processing.limits import Rate, Throttle
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.retry import RetryPolicy
from kafka_jobs.processing.scheduler import FifoScheduler, Scheduler
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.recurring import Schedule
from kafka_jobs.results import JobResult, ResultNotSerializable
from kafka_jobs.settings import Settings
from kafka_jobs.task import Task
from kafka_jobs.transactions import Transaction, transaction
from kafka_jobs.worker.runner import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
    "BadSignature",
    "Chain",
    "ChainResult",
    "Chord",
    "ChordResult",
    "ConfigurationError",
    "DeliveryError",
    "DeliveryTimeout",
    "Disposition",
    "EnqueueError",
    "EnqueuedJob",
    "Event",
    "Failure",
    "FailureHandler",
    "FifoScheduler",
    "Group",
    "GroupResult",
    "Job",
    "JobContext",
    "JobExpired",
    "JobFailed",
    "JobOptions",
    "JobResult",
    "JobRevoked",
    "JobTerminated",
    "JobsQueue",
    "KafkaJobsError",
    "LogFailures",
    "MaxRetriesExceeded",
    "NotDecodable",
    "PayloadTooLarge",
    "Rate",
    "RecordRejected",
    "RecordTooLarge",
    "Requeued",
    "ResultNotKept",
    "ResultNotSerializable",
    "ResultUnavailable",
    "Retry",
    "RetryLater",
    "RetryPolicy",
    "RetryThenDeadLetter",
    "Schedule",
    "Scheduler",
    "Settings",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "Throttle",
    "TimeLimitExceeded",
    "TopicSettings",
    "Transaction",
    "UnknownFormatVersion",
    "UnknownTask",
    "VirtualPartitions",
    "Worker",
    "chain",
    "chord",
    "current_job",
    "default_app",
    "flush",
    "group",
    "kafka_job",
    "result",
    "transaction",
]
