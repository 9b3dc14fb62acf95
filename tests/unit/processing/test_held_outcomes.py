"""A kept result's offset is held back from the commit until the outcome write is acknowledged.

The executor does not wait for each outcome on the worker thread: it holds the
record's offset (and every later one of the batch, to keep them in order) out of
`done_offsets` until the write's acknowledgement arrives. Fakes stand in for the
producer: the guarantee is about what the executor hands to the commit path.
"""

from __future__ import annotations

import threading

from kafka_jobs import App, DeliveryError
from kafka_jobs.processing.executor import Executor
from kafka_jobs.processing.failures import LogFailures
from kafka_jobs.processing.jobs import Job, PartitionState
from kafka_jobs.processing.ports import Processing
from kafka_jobs.results.writer import ResultWriter
from kafka_jobs.wire import encode_headers, encode_value


class Message:
    """The parts of a consumed record the executor reads."""

    def __init__(self, offset: int) -> None:
        self._offset = offset
        self._headers = encode_headers("double", f"job-{offset}", None)
        self._value = encode_value((offset,), {})

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def key(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return self._headers


class Ack:
    """An outcome write: acknowledged, refused or still pending, as the test says."""

    def __init__(self, writer: Writer, job: Job, offset: int, fails: bool) -> None:
        self.writer, self.job, self.offset, self.fails = writer, job, offset, fails
        self.reported = False
        self.done_when_waited: list[int] | None = None
        self.writes_when_waited = 0

    def wait(self, timeout: float | None = None) -> Ack:
        # What the commit path could see while this write was not acknowledged yet.
        self.done_when_waited = list(self.job.done_offsets)
        self.writes_when_waited = len(self.writer.acks)
        self.reported = True
        if self.fails:
            raise DeliveryError("refused by the broker")
        return self


class Writer:
    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.acks: list[Ack] = []
        self.job: Job | None = None

    def enqueue(self, topic, job_id, value, key, headers, partition=None) -> Ack:  # type: ignore[no-untyped-def]
        assert self.job is not None
        offset = int(job_id.rsplit("-", 1)[1])
        ack = Ack(self, self.job, offset, offset in self.failing)
        self.acks.append(ack)
        return ack


def _run(failing: set[int]) -> tuple[Job, Writer]:
    app = App(bootstrap_servers="127.0.0.1:1", default_topic="t")

    @app.job(name="double", keep_result=True)
    def double(n: int) -> int:
        return 2 * n

    writer = Writer(failing)
    processing = Processing(
        tasks=app,
        settings=app.settings,
        events=app.events,
        secret=None,
        results=ResultWriter(writer, "results", 1, 5.0),  # type: ignore[arg-type]
        policies=app,
    )
    executor = Executor(processing, LogFailures(), threading.Event())
    job = Job("g", PartitionState("t", 0), [Message(o) for o in range(4)])  # type: ignore[misc]
    writer.job = job
    assert executor.run(job)
    return job, writer


def test_no_offset_reaches_the_commit_path_before_its_outcome_is_acknowledged() -> None:
    job, writer = _run(failing=set())
    # "started" writes are not waited for; the four final outcomes are.
    finals = [ack for ack in writer.acks if ack.done_when_waited is not None]
    assert [ack.offset for ack in finals] == [0, 1, 2, 3]
    for ack in finals:
        assert ack.done_when_waited is not None
        assert all(offset < ack.offset for offset in ack.done_when_waited)
    assert job.done_offsets == [0, 1, 2, 3] and not job.held
    # The batch's writes overlap: all eight (started, final) were sent before any wait.
    assert finals[0].writes_when_waited == 8


def test_a_refused_outcome_makes_its_record_and_the_later_ones_run_again() -> None:
    job, _ = _run(failing={2})
    assert job.done_offsets == [0, 1]
    assert job.resume_from == 2 and not job.held
