"""The worker: listeners, jobs queue, scheduler and worker threads."""

from kafka_jobs.worker.failures import (
    Disposition,
    Failure,
    FailureHandler,
    LogFailures,
    RetryLater,
    RetryThenDeadLetter,
)
from kafka_jobs.worker.jobs import Job, PartitionState
from kafka_jobs.worker.listener import SubscriptionGroup
from kafka_jobs.worker.queue import JobsQueue
from kafka_jobs.worker.runner import Worker
from kafka_jobs.worker.scheduler import FifoScheduler, Scheduler

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
