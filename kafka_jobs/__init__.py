"""kafka-jobs: background jobs on Apache Kafka.

    from kafka_jobs import kafka_job

    @kafka_job(topic="orders", key="order_id")
    def process_order(order_id: int) -> None: ...

    process_order.delay(42)
    kafka_jobs.flush()

Run the jobs with `kafka-jobs worker -A yourmodule`.
"""

from kafka_jobs.app import App, default_app, flush, kafka_job
from kafka_jobs.context import JobContext, current_job
from kafka_jobs.errors import (
    BadSignature,
    ConfigurationError,
    DeliveryError,
    DeliveryTimeout,
    EnqueueError,
    KafkaJobsError,
    NotDecodable,
    PayloadTooLarge,
    RecordRejected,
    RecordTooLarge,
    UnknownFormatVersion,
    UnknownTask,
)
from kafka_jobs.options import JobOptions, TopicSettings
from kafka_jobs.processing.lanes import VirtualPartitions
from kafka_jobs.processing.retry import RetryPolicy
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.settings import Settings
from kafka_jobs.task import Task
from kafka_jobs.transactions import Transaction, transaction

__version__ = "0.1.0"

__all__ = [
    "App",
    "BadSignature",
    "ConfigurationError",
    "DeliveryError",
    "DeliveryTimeout",
    "EnqueueError",
    "EnqueuedJob",
    "JobContext",
    "JobOptions",
    "KafkaJobsError",
    "NotDecodable",
    "PayloadTooLarge",
    "RecordRejected",
    "RecordTooLarge",
    "RetryPolicy",
    "Settings",
    "Task",
    "TopicSettings",
    "Transaction",
    "UnknownFormatVersion",
    "UnknownTask",
    "VirtualPartitions",
    "current_job",
    "default_app",
    "flush",
    "kafka_job",
    "transaction",
]
