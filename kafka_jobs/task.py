"""Tasks: the user's decorated functions, and how a call becomes a record."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, ParamSpec, TypedDict, TypeVar, Unpack

from kafka_jobs.context import current_job_or_none, note_enqueued
from kafka_jobs.delay.tiers import cancel_topic, next_hop, tier_topic, with_delay_headers
from kafka_jobs.errors import PayloadTooLarge
from kafka_jobs.instrumentation import tracing
from kafka_jobs.options import DeadLetterSetting, KeySpec, TopicOptions
from kafka_jobs.processing.limits import Rate
from kafka_jobs.processing.retry import RetryOrdering, RetryPolicy
from kafka_jobs.processing.timelimits import TimeLimits
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.results.handle import for_enqueued
from kafka_jobs.signing import sign
from kafka_jobs.transactions import active_transaction
from kafka_jobs.wire import (
    H_EXPIRES,
    Headers,
    encode_dill_value,
    encode_headers,
    encode_value,
    new_job_id,
    now_ms,
)

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.canvas.signature import Signature

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task is routed.

    topic: the Kafka topic its jobs go to.
    key: name of the argument whose value is the partition key, or a callable
        taking the call's arguments and returning it; None for no key.
    name: registered name, by default `module.qualname`.
    retry / dead_letter_topic: failure policy (None: the topic's, then the defaults).
    serializer: "json", or "dill" for signed payloads.
    keep_result: write outcomes to the results topic (None: the app's default).
    expires: seconds after enqueue past which a job is not started (None: never).
    rate_limit: at most this many job starts per worker (None: no limit).
    retry_ordering: "strict" or "relaxed" retries (None: the topic's, then the app's).
    time_limits: soft / hard time limits (None: the topic's, then the app's).
    topic_flags: long_running / manual_offsets / subscription_group asked for by
        this task, applied to its whole topic (see `App.consumption`).
    """

    topic: str
    name: str
    key: KeySpec = None
    retry: RetryPolicy | None = None
    dead_letter_topic: DeadLetterSetting = None
    serializer: str = "json"
    topic_flags: TopicOptions | None = None
    keep_result: bool | None = None
    expires: float | None = None
    rate_limit: Rate | None = None
    retry_ordering: RetryOrdering | None = None
    time_limits: TimeLimits | None = None


def key_bytes(value: object) -> bytes | None:
    """A partition key as bytes: bytes as they are, anything else via `str()`."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class _EnqueueOptions(TypedDict, total=False):
    """The keyword options of `Task.apply_async()`."""

    key: object
    headers: Mapping[str, str | bytes] | None
    topic: str | None
    countdown: float | None
    eta: datetime.datetime | None


class Task(Generic[P, R]):
    """A function registered as a job. Calling it runs it inline; `.delay()` enqueues it."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions, app: App) -> None:
        self.fn = fn
        self.options = options
        self.app = app
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)
        self.__wrapped__ = fn
        self._key_position, self._key_default = _locate_key(fn, options.key)
        self.is_async = inspect.iscoroutinefunction(fn)
        """True for an `async def` job: workers run it on their event loop."""
        self.bookkeeping = False
        """True for kafka-jobs' own jobs (a chord's join): never run in a child process."""

    @property
    def name(self) -> str:
        """The registered task name."""
        return self.options.name

    @property
    def keeps_result(self) -> bool:
        """True when workers write this task's outcomes to the results topic."""
        keep = self.options.keep_result
        return self.app.settings.keep_result if keep is None else keep

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task here, now, like the plain function (no Kafka involved)."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> EnqueuedJob:
        """Enqueue a call with these arguments; returns at once with a handle."""
        return self.apply_async(args, kwargs)

    def s(self, *args: object, **kwargs: object) -> Signature:
        """A signature of a call to enqueue later, alone or in a chain, group or chord.

        In a chain the previous step's value comes before `args`.
        """
        from kafka_jobs.canvas.signature import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: object, **kwargs: object) -> Signature:
        """An immutable signature: in a chain it does not get the previous step's value."""
        from kafka_jobs.canvas.signature import Signature

        return Signature(self, args, kwargs, immutable=True)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> EnqueuedJob:
        """`delay()` for asyncio code: enqueue, then await the broker's acknowledgement.

        The enqueue itself never blocks the event loop for long (it only waits while
        the client's local queue is full); the wait for the acknowledgement runs in
        the loop's default executor.
        """
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        **options: Unpack[_EnqueueOptions],
    ) -> EnqueuedJob:
        """`apply_async()` for asyncio code; returns once the broker acknowledged the job."""
        handle = self.apply_async(args, kwargs, **options)
        timeout = self.app.settings.delivery_timeout + 5  # the producer gives up first
        return await asyncio.get_running_loop().run_in_executor(None, handle.wait, timeout)

    def apply_async(
        self,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        key: object = None,
        headers: Mapping[str, str | bytes] | None = None,
        topic: str | None = None,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        job_id: str | None = None,
        canvas: Headers | None = None,
        expires: float | datetime.datetime | None = None,
    ) -> EnqueuedJob:
        """Enqueue a call with explicit options.

        key: overrides the partition key derived from the arguments.
        headers: extra record headers (names starting with ``kj-`` are reserved).
        topic: overrides the task's topic for this job.
        countdown / eta: run no earlier than this many seconds from now / this
            time (use an aware datetime). See `kafka_jobs.delay.tiers`.
        job_id: the job's id (default: a fresh one); enqueueing twice with one id
            makes two records of one job (its results keep the first final outcome).
        canvas: kafka-jobs' own canvas headers (`kafka_jobs.canvas` sets them).
        expires: seconds from now, or an aware datetime, after which the job is not
            started (default: the task's `expires`); see `kafka_jobs.processing.control`.
        """
        kwargs = {} if kwargs is None else kwargs
        dill = self.options.serializer == "dill"
        value = encode_dill_value(args, kwargs) if dill else encode_value(args, kwargs)
        limit = self.app.settings.max_payload_bytes
        if len(value) > limit:
            raise PayloadTooLarge(
                f"job for {self.name} is {len(value)} bytes; the limit is {limit}"
            )
        partition_key = key_bytes(key if key is not None else self._derive_key(args, kwargs))
        job_id = job_id or new_job_id()
        signature = sign(self.app.secret, self.name, job_id, value) if dill else None
        target = topic or self.options.topic
        record_headers = encode_headers(
            self.name,
            job_id,
            partition_key,
            extra=_with_trace(headers, self.name, target),
            signature=signature,
        )
        if canvas:
            record_headers.extend(canvas)
        expires = self.options.expires if expires is None else expires
        if expires is not None:
            record_headers.append((H_EXPIRES, str(_expiry_ms(expires)).encode()))
        hop = None
        if countdown is not None or eta is not None:
            now = now_ms()
            due = now + int(countdown * 1000) if countdown is not None else 0
            if eta is not None:
                due = max(due, int(eta.timestamp() * 1000))
            hop = next_hop(now, due)
        txn = active_transaction()
        if txn is not None and hop is None:  # joins the job's transaction; settled at commit
            handle = EnqueuedJob(job_id, target, self.app.producer, os.getpid())
            txn.produce(target, value, partition_key, record_headers, handle.on_delivery)
        elif hop is None:
            handle = self.app.producer.enqueue(target, job_id, value, partition_key, record_headers)
        else:
            prefix = self.app.settings.delay_topic_prefix
            seconds, not_before = hop
            record_headers = with_delay_headers(record_headers, due, target, not_before)
            handle = self.app.producer.enqueue(
                tier_topic(prefix, seconds), job_id, value, partition_key, record_headers
            )
            handle.delayed(due, cancel_topic(prefix))
        if self.keeps_result:
            handle.keep_result(for_enqueued(job_id, self.app.settings))
        note_enqueued(handle)
        return handle

    def partition_key(self, args: Sequence[object], kwargs: Mapping[str, object]) -> object:
        """The partition key a call with these arguments gets (None: none)."""
        return self._derive_key(args, kwargs)

    def _derive_key(self, args: Sequence[object], kwargs: Mapping[str, object]) -> object:
        spec = self.options.key
        if spec is None:
            return None
        if callable(spec):
            return spec(*args, **kwargs)
        if spec in kwargs:
            return kwargs[spec]
        if self._key_position is not None and self._key_position < len(args):
            return args[self._key_position]
        return self._key_default

    def __repr__(self) -> str:
        return f"<Task {self.name} topic={self.options.topic}>"


def _expiry_ms(expires: float | datetime.datetime) -> int:
    if isinstance(expires, datetime.datetime):
        if expires.tzinfo is None:
            raise ValueError("expires must be an aware datetime (with a timezone)")
        return int(expires.timestamp() * 1000)
    return now_ms() + int(expires * 1000)


def _with_trace(
    headers: Mapping[str, str | bytes] | None, task: str, topic: str
) -> Mapping[str, str | bytes] | None:
    """Carry the W3C trace context to the job, unless the caller gave one.

    OpenTelemetry's current span when it is set up (see
    `kafka_jobs.instrumentation.tracing`), else the running job's.
    """
    if headers is not None and "traceparent" in headers:
        return headers
    if tracing.enabled():
        return {**tracing.send_headers(task, topic), **(headers or {})}
    context = current_job_or_none()
    if context is None:
        return headers
    trace = {k: v for k in ("traceparent", "tracestate") if (v := context.headers.get(k))}
    if not trace:
        return headers
    return {**trace, **(headers or {})}


def _locate_key(fn: Callable[..., object], spec: KeySpec) -> tuple[int | None, object]:
    """Where the key argument sits, so `.delay()` never pays for `inspect` binding."""
    if not isinstance(spec, str):
        return None, None
    parameters = inspect.signature(fn).parameters
    if spec not in parameters:
        raise TypeError(f"key={spec!r} is not a parameter of {fn.__qualname__}")
    parameter = parameters[spec]
    default = None if parameter.default is inspect.Parameter.empty else parameter.default
    if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
        return list(parameters).index(spec), default
    return None, default
