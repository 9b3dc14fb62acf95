"""Job results in Kafka: outcomes written by workers, read by handles (`keep_result=True`)."""

from kafka_jobs.results.handle import JobResult
from kafka_jobs.results.outcome import Outcome, RemoteError, State
from kafka_jobs.results.writer import ResultNotSerializable, ResultWriter

__all__ = [
    "JobResult",
    "Outcome",
    "RemoteError",
    "ResultNotSerializable",
    "ResultWriter",
    "State",
]
