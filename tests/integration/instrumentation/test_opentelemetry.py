"""With OpenTelemetry set up, one trace spans the enqueue and the job's run."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from kafka_jobs import current_job
from kafka_jobs.testing import wait_until

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracer() -> trace.Tracer:
    """The process-wide provider (OpenTelemetry allows setting it once)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider was set in this process first")
    return trace.get_tracer("tests")


def test_one_trace_from_request_to_job_to_child(kafka_app, new_topic, tracer) -> None:
    topic = new_topic()
    app = kafka_app(default_topic=topic)
    inside: dict[str, int] = {}

    @app.job(retries=0, dead_letter_topic=False)
    def child(fail: bool) -> None:
        if fail:
            raise LookupError("gone")

    @app.job
    async def parent() -> None:
        inside["trace_id"] = trace.get_current_span().get_span_context().trace_id
        inside["traceparent"] = len(current_job().headers["traceparent"] or b"")
        child.delay(True)

    with tracer.start_as_current_span("request") as request:
        parent.delay()
    app.flush(10)
    with app.worker():
        assert wait_until(
            lambda: any(s.name == f"{child.name} process" for s in EXPORTER.get_finished_spans()),
            timeout=30,
        )
    spans = {
        s.name: s
        for s in EXPORTER.get_finished_spans()
        if s.context.trace_id == request.get_span_context().trace_id
    }
    send, run = spans[f"{parent.name} send"], spans[f"{parent.name} process"]
    child_send, child_run = spans[f"{child.name} send"], spans[f"{child.name} process"]
    assert send.parent.span_id == request.get_span_context().span_id
    assert run.parent.span_id == send.context.span_id and run.kind == SpanKind.CONSUMER
    assert child_send.parent.span_id == run.context.span_id  # enqueued inside the job
    assert child_run.parent.span_id == child_send.context.span_id
    assert inside["trace_id"] == request.get_span_context().trace_id  # current inside the job
    assert inside["traceparent"] == 55
    assert run.attributes["messaging.destination.name"] == topic
    assert child_run.status.status_code == StatusCode.ERROR
    assert child_run.events[0].name == "exception"
