"""Writing job outcomes to the results topic, from the worker that ran the job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.results.outcome import Outcome, partition_of

if TYPE_CHECKING:
    from kafka_jobs.processing.ports import Delivery, RecordWriter


class ResultNotSerializable(KafkaJobsError, TypeError):
    """A job returned a value JSON cannot encode; the job fails with this reason."""


class ResultWriter:
    """Writes outcomes keyed by job id to their partition, and waits for each.

    The worker waits for the acknowledgement before the job's offset may be
    committed: a result is never lost to a crash after the commit.
    Thread-safe: worker threads share one (the producer is).
    """

    def __init__(self, writer: RecordWriter, topic: str, partitions: int, timeout: float) -> None:
        self.topic = topic
        self.partitions = partitions  # the topic's own count, once a worker looked it up
        self._writer = writer
        self._timeout = timeout

    def write(self, outcome: Outcome, *, wait: bool = True) -> Delivery:
        """Write `outcome` and wait for it (`wait=False`: only hand it to the producer).

        One producer writes each partition in order, so a job's started state
        never lands after its final outcome.

        Raises:
            ResultNotSerializable: its value is not JSON.
            DeliveryError / EnqueueError: the broker did not take it.
        """
        try:
            value = outcome.encode()
        except (TypeError, ValueError) as exc:
            raise ResultNotSerializable(
                f"the value returned by {outcome.task} cannot be encoded as JSON: {exc}"
            ) from None
        job_id = outcome.job_id
        delivery = self._writer.enqueue(
            self.topic,
            job_id,
            value,
            job_id.encode(),
            [],
            partition_of(job_id, self.partitions),
        )
        if wait:
            delivery.wait(self._timeout)
        return delivery
