"""The job producer: asynchronous, client-batched enqueue with tracked deliveries."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kafka_jobs.errors import DeliveryError, DeliveryTimeout, EnqueueError, ResultNotKept
from kafka_jobs.settings import ClientConfig
from kafka_jobs.wire import Headers

log = logging.getLogger("kafka_jobs.producer")

_MAX_KEPT_FAILURES = 10_000


_WAIT_STEP = 0.02  # seconds a waiter sleeps or polls before looking again


class _Pid:
    """This process's id, kept current across forks: `os.getpid()` is a system call."""

    value = os.getpid()


os.register_at_fork(after_in_child=lambda: setattr(_Pid, "value", os.getpid()))


class ResultSource(Protocol):
    """Where a handle reads its job's outcome (`kafka_jobs.results.JobResult`)."""

    @property
    def state(self) -> str:
        """The job's state now."""

    def ready(self) -> bool:
        """True once the job has a final outcome."""

    def get(self, timeout: float | None = None) -> object:
        """The job's value, or its exception raised."""

    async def aget(self, timeout: float | None = None) -> object:
        """`get` for coroutines."""


class EnqueuedJob:
    """Handle of an enqueued job: its id, and its delivery once the broker acknowledged it.

    Thread contract: the delivery fields are written by whichever thread serves the
    producer's callbacks; `wait()` may be called from any thread.
    """

    __slots__ = (
        "_cancel_topic",
        "_done",
        "_error",
        "_pending",
        "_pid",
        "_producer",
        "_result",
        "eta_ms",
        "id",
        "offset",
        "partition",
        "topic",
    )

    def __init__(self, job_id: str, topic: str, producer: JobProducer, pid: int) -> None:
        self.id = job_id
        self._pid = pid
        self.topic = topic
        self.partition: int | None = None
        self.offset: int | None = None
        self._error: str | None = None
        self._pending = True
        self._done: threading.Event | None = None  # made by a waiter, set on the report
        self._producer = producer
        self.eta_ms: int | None = None
        self._cancel_topic: str | None = None
        self._result: ResultSource | None = None

    @property
    def reported(self) -> bool:
        """True once the broker answered (acknowledged or refused)."""
        return not self._pending

    @property
    def delivered(self) -> bool:
        """True once the broker acknowledged the job."""
        return not self._pending and self._error is None

    def wait(self, timeout: float | None = None) -> EnqueuedJob:
        """Block until the broker acknowledged the job; raise `DeliveryError` if it did not."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._pending and self._pid != _Pid.value:
            raise DeliveryError(f"job {self.id} was enqueued by another process; wait there")
        while self._pending:
            left = _WAIT_STEP if deadline is None else min(_WAIT_STEP, deadline - time.monotonic())
            if left <= 0:
                raise DeliveryTimeout(f"job {self.id} not acknowledged within {timeout}s")
            # One waiter serves everyone's reports, the others sleep on their own event
            # (polling each, a thread whose report another served slept out its poll).
            if self._producer.poll_if_idle(left):
                continue
            done = self._done
            if done is None:
                done = self._done = threading.Event()
                if not self._pending:  # reported meanwhile, before the event existed
                    break
            done.wait(left)
        if self._error is not None:
            self._producer._forget_failure(self.id)  # reported here, not again by flush()
            raise DeliveryError(
                f"job {self.id} was not delivered: {self._error}", [(self.id, self._error)]
            )
        return self

    def cancel(self) -> EnqueuedJob:
        """Cancel a delayed job (best effort until about a second before it is due).

        Returns the cancellation's own handle; `wait()` on it to know it was written.
        """
        if self._cancel_topic is None or self.eta_ms is None:
            raise ValueError(f"job {self.id} was not delayed; only delayed jobs can be cancelled")
        return self._producer.enqueue(
            self._cancel_topic, "", str(self.eta_ms).encode(), self.id.encode(), []
        )

    def revoke(self, ttl: float | None = None, *, terminate: bool = False) -> None:
        """Revoke the job: not started if not yet; `terminate`: ended if running (`App.revoke`)."""
        revoker = self._producer.revoker
        if revoker is None:
            raise ValueError(f"job {self.id}: its producer belongs to no app; use app.revoke()")
        revoker([self.id], ttl, terminate=terminate)

    def keep_result(self, result: ResultSource) -> EnqueuedJob:
        """The job's outcome can be read through `result` (its task keeps results)."""
        self._result = result
        return self

    def _results(self) -> ResultSource:
        if self._result is None:
            raise ResultNotKept(
                f"job {self.id}: its task does not keep results (use keep_result=True)"
            )
        return self._result

    def get(self, timeout: float | None = None) -> object:
        """The job's return value, waiting up to `timeout` seconds (see `JobResult.get`)."""
        return self._results().get(timeout)

    async def aget(self, timeout: float | None = None) -> object:
        """`get` for coroutines."""
        return await self._results().aget(timeout)

    @property
    def state(self) -> str:
        """pending, retrying, succeeded, failed or dead-lettered (see `JobResult.state`)."""
        return self._results().state

    def ready(self) -> bool:
        """True once the job has a final outcome."""
        return self._results().ready()

    def delayed(self, due_ms: int, cancel_topic: str) -> EnqueuedJob:
        """Record that the job waits in the delay tiers until `due_ms` (for `cancel()`)."""
        self.eta_ms = due_ms
        self._cancel_topic = cancel_topic
        return self

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """The producer's delivery report for this job's record."""
        if err is not None:
            if err.code() == KafkaError._MSG_TIMED_OUT:
                self._producer._note_timeout()
            self._fail(err.str())
        else:
            self.partition = msg.partition()
            self.offset = msg.offset()
            self._pending = False
            self._producer._timing_out_since = 0.0
            done = self._done  # read after _pending is cleared: see `wait`
            if done is not None:
                done.set()
        # Last: a report cut short (see JobProducer._serve) leaves the job in flight, and
        # the job fails when the client is replaced rather than staying pending forever.
        self._producer._in_flight.pop(self.id, None)

    def _fail(self, reason: str) -> None:
        self._error = reason
        self._producer._record_failure(self.id, self.topic, reason)
        self._pending = False
        done = self._done
        if done is not None:
            done.set()

    def __repr__(self) -> str:
        state = "pending" if self._pending else ("failed" if self._error else "delivered")
        return f"<EnqueuedJob {self.id} topic={self.topic} {state}>"


class JobProducer:
    """Wraps one confluent-kafka `Producer` per process.

    Thread-safe: confluent-kafka's producer is, and the failure list is guarded.
    A forked child gets a fresh client on first use (librdkafka does not survive fork).
    """

    def __init__(self, config: ClientConfig, delivery_timeout: float) -> None:
        self._config = config
        self._delivery_timeout = delivery_timeout
        self._exit_hook_registered = False
        # Set by the App that owns this producer: how its jobs' handles revoke them.
        self.revoker: Callable[..., object] | None = None  # (ids, ttl, terminate=)
        self._reset()
        _producers.add(self)

    def _reset(self) -> None:
        """Fresh state; also run in a forked child (the parent's client and lock are unusable)."""
        self._lock = threading.Lock()
        self._waiter = threading.Lock()  # held by the one thread polling for waiters
        self._client: Producer | None = None
        self._pid = 0
        self._failures: dict[str, str] = {}
        self._failures_dropped = 0
        self._fatal: KafkaError | None = None
        # Set when the client delivered nothing for a whole delivery timeout after a
        # timeout: it is replaced like a failed one (see `_note_timeout`).
        self._stuck: str | None = None
        self._timing_out_since = 0.0
        # Jobs handed to the client and not reported yet: if the client dies they fail.
        self._in_flight: dict[str, EnqueuedJob] = {}

    @property
    def client(self) -> Producer:
        """The underlying confluent-kafka producer, created on first use."""
        self._replace_if_due()
        client = self._client
        if client is None or self._pid != _Pid.value:
            with self._lock:
                if self._client is not None and self._pid != _Pid.value:
                    _inherited_clients.append(self._client)  # never destroyed in a child
                if self._client is None or self._pid != _Pid.value:
                    self._client = Producer({**self._config, "error_cb": self._on_error})
                    self._pid = _Pid.value
                    if not self._exit_hook_registered:
                        atexit.register(self._flush_at_exit)
                        self._exit_hook_registered = True
                client = self._client
        return client

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        partition: int | None = None,
    ) -> None:
        """Hand a record to the client; waits (bounded) only while its local queue is full.

        partition: where it goes; None lets the partitioner choose (by key).
        """
        # confluent-kafka's "no partition chosen" (RD_KAFKA_PARTITION_UA)
        where = -1 if partition is None else partition
        client = self.client
        deadline = 0.0
        replaced = False
        while True:
            try:
                client.produce(topic, value, key, where, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: serve deliveries to make room, but not forever.
                now = time.monotonic()
                deadline = deadline or now + self._delivery_timeout
                if now > deadline:
                    raise EnqueueError(
                        f"producer queue stayed full for {self._delivery_timeout}s;"
                        " is the broker reachable?"
                    ) from None
                self._serve(lambda c: c.poll(0.05))
                client = self.client
            except KafkaException as exc:
                error = _kafka_error(exc)
                if error is not None and error.fatal() and not replaced:
                    self._fatal = error  # the client is done for: retry once on a new one
                    client, replaced = self.client, True
                    continue
                raise EnqueueError(f"cannot enqueue to {topic!r}: {exc}") from exc
            except Exception as exc:  # unknown topic in config, too large...
                raise EnqueueError(f"cannot enqueue to {topic!r}: {exc}") from exc
        self._serve(lambda c: c.poll(0))

    def enqueue(
        self,
        topic: str,
        job_id: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> EnqueuedJob:
        """Produce one job record (to `partition`, if given) and return its handle."""
        # A client due for replacement is replaced first: that fails what it held, and
        # must not count this job among them (it goes to the new client).
        self._replace_if_due()
        handle = EnqueuedJob(job_id, topic, self, _Pid.value)
        self._in_flight[job_id] = handle
        try:
            self.produce(topic, value, key, headers, handle.on_delivery, partition)
        except BaseException:
            self._in_flight.pop(job_id, None)
            raise
        return handle

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks."""
        self._serve(lambda client: client.poll(timeout))

    def poll_if_idle(self, timeout: float) -> bool:
        """Serve delivery callbacks unless another thread is waiting on them; True if served."""
        if not self._waiter.acquire(blocking=False):
            return False
        try:
            self._serve(lambda client: client.poll(timeout))
        finally:
            self._waiter.release()
        return True

    def _serve(self, call: Callable[[Producer], int]) -> int:
        """`call` on the client; a fatal client error replaces the client (see `_on_error`)."""
        try:
            return call(self.client)
        except (KafkaException, SystemError) as exc:
            # confluent-kafka raises a fatal error from inside poll()/flush(); callbacks
            # served after it then fail with SystemError ("returned a result with an
            # exception set"), its cause being that fatal error.
            cause = exc if isinstance(exc, KafkaException) else exc.__cause__
            error = _kafka_error(cause)
            if error is None or not error.fatal():
                if self._fatal is None:
                    if isinstance(exc, SystemError) and cause is None:
                        # The client's C side failed without saying why (seen in CI right
                        # after a broker restart): it cannot be trusted; replace it, and
                        # what it held fails loudly.
                        self._stuck = f"client call failed: {exc}"
                        self._replace_failed_client()
                        return 0
                    raise
                error = self._fatal
            self._fatal = error
            self._replace_failed_client()
            return 0

    def _on_error(self, error: KafkaError) -> None:
        # Runs inside poll()/flush(): only note it. A fatal error (an idempotent producer
        # whose state the broker lost, e.g. UNKNOWN_PRODUCER_ID after a broker restart)
        # makes the client unusable for good; the next call replaces it.
        if error.fatal():
            self._fatal = error
        else:
            log.debug("producer: %s", error)

    def _note_timeout(self) -> None:
        """A delivery timed out: after a whole timeout window of nothing else, drop the client.

        An idempotent client can get stuck for good after a broker restart: the broker
        lost its producer state, and the client waits on a producer id it never gets back
        (seen with the embedded broker), without any fatal error. Every record then times
        out. A new client gets a new producer id; one that only hit a real outage loses
        nothing by being replaced, since its records were timing out anyway.
        """
        now = time.monotonic()
        if not self._timing_out_since:
            self._timing_out_since = now
        elif now - self._timing_out_since >= self._delivery_timeout and self._stuck is None:
            self._stuck = f"nothing delivered for {now - self._timing_out_since:.0f}s"

    def _replace_if_due(self) -> None:
        if self._fatal is not None or self._stuck is not None:
            self._replace_failed_client()

    def _replace_failed_client(self) -> None:
        with self._lock:
            old, self._client = self._client, None
            error, self._fatal = self._fatal, None
            stuck, self._stuck = self._stuck, None
            self._timing_out_since = 0.0
            stranded, self._in_flight = self._in_flight, {}
        if old is None:
            return
        cause = error.str() if error is not None else stuck
        log.error("producer failed (%s): starting a new one", cause)
        try:  # what the old client still held is reported as not delivered
            old.purge()
            old.poll(0)
        except (KafkaException, SystemError) as exc:
            log.debug("purging the failed producer: %s", exc)
        reason = f"producer failed: {cause}"
        for handle in list(stranded.values()):
            if handle._pending:  # its report was lost with the client: never silent
                handle._fail(reason)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every pending delivery; raise if any failed or some are still pending."""
        if self._client is None:
            return
        wait = self._delivery_timeout if timeout is None else timeout
        remaining = self._serve(lambda client: client.flush(wait))
        failures = self._take_failures()
        if failures:
            raise DeliveryError(
                f"{len(failures)} job(s) were not delivered; first: {failures[0][1]}", failures
            )
        if remaining:
            raise DeliveryTimeout(f"{remaining} job(s) still undelivered after {timeout}s")

    def check(self) -> None:
        """Raise `DeliveryError` for deliveries that failed since the last check or flush."""
        if self._failures or self._failures_dropped:
            failures = self._take_failures()
            raise DeliveryError(
                f"{len(failures)} earlier record(s) were not delivered; first: {failures[0][1]}",
                failures,
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush, then drop the client (a later enqueue creates a new one)."""
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._client = None

    def _take_failures(self) -> list[tuple[str, str]]:
        with self._lock:
            failures, self._failures = self._failures, {}
            dropped, self._failures_dropped = self._failures_dropped, 0
        taken = list(failures.items())
        if dropped:
            taken.append(("(more)", f"{dropped} further failures were logged but not kept"))
        return taken

    def _record_failure(self, job_id: str, topic: str, reason: str) -> None:
        log.error("job %s to topic %s was not delivered: %s", job_id, topic, reason)
        with self._lock:
            if len(self._failures) < _MAX_KEPT_FAILURES:
                self._failures[job_id] = reason
            else:  # nobody flushes: keep memory bounded, the log has every one
                self._failures_dropped += 1

    def _forget_failure(self, job_id: str) -> None:
        with self._lock:
            self._failures.pop(job_id, None)

    def _flush_at_exit(self) -> None:
        if self._client is None or self._pid != os.getpid():
            return
        try:
            self.flush(self._delivery_timeout)
        except DeliveryError as exc:
            log.error("at exit: %s", exc)


def _kafka_error(exc: BaseException | None) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


_producers: weakref.WeakSet[JobProducer] = weakref.WeakSet()


# The parent's clients, as seen by a forked child: kept referenced there for good.
# Dropping one would run librdkafka's destructor in a process without its threads,
# which crashes (seen as a segfault in a subprocess started with preexec_fn).
_inherited_clients: list[Producer] = []


def _reset_after_fork() -> None:
    for producer in list(_producers):
        if producer._client is not None:
            _inherited_clients.append(producer._client)
        producer._reset()


os.register_at_fork(after_in_child=_reset_after_fork)
