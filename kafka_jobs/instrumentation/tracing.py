"""OpenTelemetry spans for enqueue and execution, when OpenTelemetry is installed and set up.

The W3C trace context (`traceparent`, `tracestate` headers) always travels from
`.delay()` into the job, and on to the jobs a job enqueues, with or without
OpenTelemetry. When `opentelemetry-api` is installed and a tracer provider is
configured (`pip install kafka-jobs[tracing]` plus the SDK or a distro):

- `.delay()` starts a PRODUCER span ``<task> send`` as a child of the current span
  and injects its context into the record's headers;
- the worker runs each record in a CONSUMER span ``<task> process`` whose parent is
  that context, so one trace spans enqueue and execution; the job's code runs with
  it as the current span (also for `async def` jobs), and an exception marks it
  failed. In the process pool the span covers the child's run from the parent.

Without a configured provider none of this costs more than a check per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # optional dependency
    trace = None  # type: ignore[assignment]

_NAME = "kafka_jobs"
_UNKNOWN = object()  # the API keeps its provider elsewhere: ask its getter every time
# A provider named in the environment is loaded by the API's getter on first use.
_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


_configured = False  # a provider, once set, stays set: then no more checks


def enabled() -> bool:
    """True when OpenTelemetry is installed and a tracer provider was configured.

    Called per enqueue and per record, so the common "not set up" answer is kept
    cheap: the API's own getter looks at the environment on every call.
    """
    global _configured
    if _configured:
        return True
    if trace is None:
        return False
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _FROM_ENVIRONMENT:
        return False
    _configured = not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    return _configured


def send_headers(task: str, topic: str) -> dict[str, str]:
    """Start and end a PRODUCER span for an enqueue; its context as headers to send."""
    tracer = trace.get_tracer(_NAME)
    with tracer.start_as_current_span(
        f"{task} send",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier


class JobSpan:
    """The CONSUMER span of one record's run: started, made current around the job, ended."""

    __slots__ = ("_span",)

    def __init__(
        self,
        task: str,
        headers: Mapping[str, bytes | None],
        attributes: Mapping[str, str | bool | int | float],
    ) -> None:
        carrier = {
            name: value.decode("latin-1")
            for name in ("traceparent", "tracestate")
            if (value := headers.get(name)) is not None
        }
        parent = propagate.extract(carrier)
        self._span = trace.get_tracer(_NAME).start_span(
            f"{task} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                **attributes,
            },
        )

    def activate(self) -> object:
        """Make the span current on this thread (or task); returns a token for `deactivate`."""
        return otel_context.attach(trace.set_span_in_context(self._span))

    @staticmethod
    def deactivate(token: object) -> None:
        """Undo `activate`."""
        otel_context.detach(token)  # type: ignore[arg-type]

    def end(self, error: BaseException | None) -> None:
        """End the span, marked failed when the job raised."""
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self._span.end()
