"""What a worker does for canvas jobs: continue a chain, join a chord, skip a copy that ran.

The executor calls three hooks (see `CanvasWorker`); everything a canvas needs
to go on is in the finished job's record and in the results topic, so any
worker can take over from any other, including after a kill -9.

Chord join, step by step. Every member carries the chord (`kj-chord`). When a
member ends for good (succeeded, failed, dead-lettered), the worker that ran
it has already waited for the member's outcome to be acknowledged; it then
enqueues a join job (task `kafka_jobs.chord.join`, the chord as its argument)
to the callback's topic, keyed by the chord id, so the joins of one chord run
one at a time, in the order written, and waits for that acknowledgement before
the member's offset may be committed. A join:

1. reads the outcomes of the callback, of the chord's own id (the "fired"
   record) and of every member, each results partition read to its end
   first, so every outcome acknowledged before this join was enqueued is seen;
2. a final outcome of the callback, or the "fired" record: another join
   finished the chord; done;
3. a member that failed for good: writes the callback's outcome as failed with
   that member's error (Celery's policy: the callback never runs); done;
4. a member without a final outcome: the chord is not complete; done (that
   member's own join comes later in the partition);
5. otherwise enqueues the callback with the members' values under its id
   fixed at `chord()` time, waits for it, then writes the "fired" record.

Crash windows. A join that dies before 5 writes nothing and runs again. One
that dies between the callback's enqueue and the "fired" record enqueues the
callback again when it runs again: both copies have the same id and the
`kj-once` mark, land in one partition, and the later copy is skipped because
the earlier one has a final outcome by the time the later one is read (a copy
runs only after the copy before it in its partition ended). So the callback's
code runs once, unless the worker running the callback itself dies before its
outcome is written: then it runs again, as any job does (at-least-once).
Joins are not run in transactions: the embedded broker shows aborted records
to read_committed readers, and the once-mark closes the same window on both brokers.

Chains. A step carries the steps after it (`kj-chain`). When it succeeded
(outcome acknowledged), its worker enqueues the next step with the value as
first argument, under the id fixed at `chain()` time, and waits for it before
the step's offset may be committed. When it failed for good, the worker writes
that error as the outcome of every later step, so the chain's handle raises it.
A step skipped as a copy that already ran still enqueues the next one from its
recorded outcome (the crash may have come between the two).

With `canvas_transactions` (and a broker that accepts transactions, a topic
without virtual partitions or manual offsets), what a finished job starts, the
next step or a chord member's join, is written in one transaction with the
job's offset (`kafka_jobs.transactions.continuation`), after the job's outcome
was acknowledged. A worker killed before the commit leaves an open transaction
(read_committed readers of the partitions it wrote wait behind it, and so does
the next owner's offset fetch on Apache Kafka) until the broker aborts it after
`transaction.timeout.ms` (librdkafka's default: 60 s), or until the partition's
next owner opens its producer: the `transactional.id` is the consumed
partition's, which ends the dead one's transaction (the embedded broker never
expires one: this is what ends it there). The record runs again and writes the
next step in a new transaction. So read_committed
readers see the next step once, not once per run (on a broker that hides
aborted records: Apache Kafka, not the embedded one, where the once-mark still
skips the copy). The outcome stays outside the transaction: a join reads the
member's outcome, which must be visible before the join is, and a re-run of a
step that carries the once-mark goes on from the recorded value instead of
running the step again. Without transactions the next step is acknowledged
before the offset may be committed: a crash in between writes it twice, and
the copy is skipped by id as described above.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from kafka_jobs.canvas.signature import ChordSpec, decode_steps, encode_steps, enqueue_step
from kafka_jobs.context import JobContext, current_job_or_none
from kafka_jobs.errors import DeliveryTimeout, KafkaJobsError
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.results.outcome import Outcome, RemoteError, partition_of
from kafka_jobs.results.reader import ResultsReader
from kafka_jobs.task import Task, TaskOptions
from kafka_jobs.transactions import active_transaction, continuation, release_continuations
from kafka_jobs.wire import (
    H_CHAIN,
    H_CHORD,
    H_ONCE,
    H_REPLAYED_FROM,
    Envelope,
    Headers,
    encode_headers,
    encode_value,
    new_job_id,
    now_ms,
)

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.processing.ports import Delivery, TaskRegistry
    from kafka_jobs.results.writer import ResultWriter
    from kafka_jobs.settings import Settings

log = logging.getLogger("kafka_jobs.canvas")

_FETCH_WAIT_MS = 20

JOIN_TASK = "kafka_jobs.chord.join"
"""Task name of a chord's join jobs (run by the worker itself, never registered)."""


def _bookkeeping(fn: Callable[..., None], name: str) -> Task[..., None]:
    """A task the worker runs instead of a record's own; it keeps no outcome of its own."""
    # Only `fn` and the options are used when a worker runs it: it needs no App.
    task: Task[..., None] = Task(
        fn, TaskOptions(topic="", name=name, keep_result=False), cast("App", None)
    )
    task.bookkeeping = True
    return task


def _since(envelope: Envelope) -> int:
    """When the job's canvas started (outcomes of its jobs are looked for from then on)."""
    raw = envelope.headers.get(H_ONCE)
    try:
        return int(raw) if raw else envelope.enqueued_at_ms
    except ValueError:
        return envelope.enqueued_at_ms


class CanvasWorker:
    """The executor's canvas hooks. Thread-safe: keeps no per-job state.

    tasks: the worker's registry (the next step's task must be registered here).
    settings: where the results topic is (its reader is the process's shared one).
    results: writes outcomes (a stopped chain's steps, a failed chord, "fired").
    secret: verifies dill values of members handed to a callback.
    """

    def __init__(
        self,
        tasks: TaskRegistry,
        settings: Settings,
        results: ResultWriter,
        secret: bytes | None,
    ) -> None:
        self._tasks = tasks
        self._settings = settings
        self._results = results
        self._secret = secret
        self._timeout = settings.delivery_timeout
        self._join = _bookkeeping(self._run_join, JOIN_TASK)
        self._reads = concurrent.futures.ThreadPoolExecutor(8, "kafka-jobs-canvas")

    @functools.cached_property
    def _reader(self) -> ResultsReader:
        # Its own reader, with short fetch waits: a broker answers a connection's
        # requests in order, so "read to the end" (a ListOffsets) would otherwise
        # wait behind an idle fetch for fetch.wait.max.ms (500 ms) every time.
        config = {**self._settings.consumer_settings(), "fetch.wait.max.ms": _FETCH_WAIT_MS}
        return ResultsReader(config, self._settings.results_topic)

    def close(self) -> None:
        """Stop the reader, if one was started, and drop idle continuation producers."""
        if "_reader" in self.__dict__:
            self._reader.close()
        self._reads.shutdown(wait=False)
        if self._settings.canvas_transactions:
            release_continuations()

    # --- hooks ---------------------------------------------------------------------

    def task_for(self, envelope: Envelope) -> Task[..., Any] | None:
        """A task to run instead of the record's own (a join, a copy that ran), or None.

        Never raises: when the results topic cannot be read, the record runs.
        """
        if envelope.task == JOIN_TASK:
            return self._join
        headers = envelope.headers
        if H_ONCE not in headers or H_REPLAYED_FROM in headers:
            return None
        try:
            outcome = self._reader.current(envelope.job_id, _since(envelope))
        except Exception as error:  # unreadable now: running it again is the safe side
            log.warning("could not look up job %s: %s", envelope.job_id, error)
            return None
        if outcome is None or not outcome.ready:
            return None
        log.info("job %s (%s) already ran: skipping this copy", envelope.job_id, envelope.task)
        return _bookkeeping(functools.partial(self._ran, envelope, outcome), envelope.task)

    def succeeded(
        self,
        envelope: Envelope,
        value: object,
        context: JobContext | None = None,
        outcome: Delivery | None = None,
    ) -> BaseException | None:
        """A canvas job's value is written: go on (next step, join); the error, if any.

        context: the finished record; with `canvas_transactions` what goes on is
            written in one transaction with its offset (see the module docstring).
        outcome: the value's write, when not acknowledged yet: it is before going on.
        """
        headers = envelope.headers
        chain, chord = headers.get(H_CHAIN), headers.get(H_CHORD)
        if chain is None and chord is None:
            return None
        try:
            if outcome is not None:  # a join reads it; a committed offset must not pass it
                outcome.wait(self._timeout)
            txn = None
            if context is not None and self._settings.canvas_transactions:
                txn = continuation(context, self._timeout)
            if txn is None:
                for handle in self._go_on(envelope, chain, chord, value):
                    handle.wait(self._timeout)
            else:
                with txn as open_txn:
                    handles = self._go_on(envelope, chain, chord, value)
                    # Delivered (not yet visible) before the commit: a plain write (a
                    # step with a countdown goes through the delay tiers) is waited for too.
                    if open_txn.producer.flush(self._timeout):
                        raise DeliveryTimeout(f"job {envelope.job_id}: next step not delivered")
                    for handle in handles:
                        handle.wait(self._timeout)
        except Exception as error:  # the job fails with it: retried, or dead-lettered
            return error
        return None

    def _go_on(
        self, envelope: Envelope, chain: bytes | None, chord: bytes | None, value: object
    ) -> list[EnqueuedJob]:
        """Enqueue the next step and the join, if any; their handles, not waited for."""
        handles = []
        if chain is not None:
            step = self._next_step(envelope, chain, value)
            if step is not None:
                handles.append(step)
        if chord is not None:
            handles.append(self._enqueue_join(envelope, chord))
        return handles

    def failed(self, envelope: Envelope, error: BaseException) -> None:
        """A canvas job failed for good (its outcome is written): stop its chain, tell its chord."""
        self._stop(envelope, RemoteError.of(error))

    # --- chains ----------------------------------------------------------------------

    def _next_step(self, envelope: Envelope, raw: bytes, value: object) -> EnqueuedJob | None:
        steps = decode_steps(raw)
        if not steps:
            return None
        step, rest = steps[0], steps[1:]
        canvas: Headers = [(H_CHAIN, encode_steps(rest))] if rest else []
        first = () if step.immutable else (value,)
        task = self._tasks.task(step.task)
        return enqueue_step(task, step, first, canvas, _since(envelope))

    def _stop(self, envelope: Envelope, error: RemoteError) -> None:
        headers = envelope.headers
        try:
            raw = headers.get(H_CHAIN)
            if raw is not None:
                for step in decode_steps(raw):
                    self._write(Outcome(step.id, step.task, "failed", error=error, attempts=0))
            raw = headers.get(H_CHORD)
            if raw is not None:
                self._enqueue_join(envelope, raw).wait(self._timeout)
        except Exception:  # the job has failed already; a handle waits until its timeout
            log.exception("job %s failed, and its canvas could not be told", envelope.job_id)

    def _ran(self, envelope: Envelope, outcome: Outcome) -> None:
        """A copy of a job that has a final outcome: go on from that outcome, again."""
        if outcome.state == "succeeded":
            value = outcome.value_for(self._secret)
            problem = self.succeeded(envelope, value, current_job_or_none())
            if problem is not None:
                raise problem
        else:
            error = outcome.error or RemoteError(
                "kafka_jobs.errors.JobFailed", f"job {outcome.job_id} {outcome.state}", ""
            )
            self._stop(envelope, error)

    # --- chords ----------------------------------------------------------------------

    def _enqueue_join(self, envelope: Envelope, raw: bytes) -> EnqueuedJob:
        """Enqueue the chord's join (in the open transaction, if any); not waited for."""
        spec = ChordSpec.decode(raw)
        topic = spec.callback.topic
        if not topic:
            raise KafkaJobsError(f"chord {spec.id}: its callback step names no topic")
        producer = self._tasks.task(envelope.task).app.producer
        job_id = new_job_id()
        key = spec.id.encode()
        value = encode_value([json.loads(raw)], {})
        headers = encode_headers(JOIN_TASK, job_id, key)
        txn = active_transaction()
        if txn is None:
            return producer.enqueue(topic, job_id, value, key, headers)
        handle = EnqueuedJob(job_id, topic, producer, os.getpid())
        txn.produce(topic, value, key, headers, handle.on_delivery)
        return handle

    def _run_join(self, chord: object) -> None:
        spec = ChordSpec.decode(json.dumps(chord))
        callback, since = spec.callback, spec.started_ms
        ran, fired, *outcomes = self._latest([callback.id, spec.id, *spec.member_ids()], since)
        if (ran is not None and ran.ready) or (fired is not None and fired.ready):
            return  # another join finished the chord
        for outcome in outcomes:
            if outcome is not None and outcome.ready and outcome.state != "succeeded":
                error = outcome.error or RemoteError(
                    "kafka_jobs.errors.JobFailed",
                    f"chord member {outcome.job_id} {outcome.state}",
                    "",
                )
                self._write(Outcome(callback.id, callback.task, "failed", error=error, attempts=0))
                return
        if any(outcome is None or not outcome.ready for outcome in outcomes):
            return
        values = [cast(Outcome, outcome).value_for(self._secret) for outcome in outcomes]
        task = self._tasks.task(callback.task)
        enqueue_step(task, callback, (values,), [], since).wait(self._timeout)
        self._write(Outcome(spec.id, JOIN_TASK, "succeeded", value={"callback": callback.id}))

    def _latest(self, ids: list[str], since_ms: int) -> list[Outcome | None]:
        """The outcomes of `ids` after reading each of their results partitions to its end.

        The partitions are read at the same time: one after another, each waits a
        turn of the reader's loop.
        """
        reader = self._reader
        partitions = reader.partitions()
        if not partitions:
            raise KafkaJobsError(f"results topic {reader.topic} not found")
        one_per_partition = {partition_of(job_id, partitions): job_id for job_id in ids}
        reads = [
            self._reads.submit(reader.current, job_id, since_ms)
            for job_id in one_per_partition.values()
        ]
        for read in reads:
            read.result()
        return [reader.known(job_id) for job_id in ids]

    def _write(self, outcome: Outcome) -> None:
        self._results.write(dataclasses.replace(outcome, finished_at_ms=now_ms()))
