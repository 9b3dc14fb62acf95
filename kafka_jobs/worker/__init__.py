"""The worker: listeners, jobs queue, scheduler and worker threads."""

from kafka_jobs.processing.failures import (
    Disposition,
    Failure,
    FailureHandler,
    LogFailures,
    RetryLater,
    RetryThenDeadLetter,
)
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.queue import JobsQueue
from kafka_jobs.processing.scheduler import FifoScheduler, Scheduler
from kafka_jobs.worker.listener import SubscriptionGroup
from kafka_jobs.worker.runner import Worker

__all__ = [
    "Disposition",
    "Failure",
    "FailureHandler",
    "FifoScheduler",
    "Job",
    "JobsQueue",
    "LogFailures",
    "PartitionState",
    "RetryLater",
    "RetryThenDeadLetter",
    "Scheduler",
    "SubscriptionGroup",
    "Worker",
]
