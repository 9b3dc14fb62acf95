"""W3C trace context travels from enqueue into the job, and on to the jobs it enqueues."""

from __future__ import annotations

from kafka_jobs import current_job
from kafka_jobs.testing import wait_until

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_trace_context_reaches_the_job_and_its_children(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic())
    seen: dict[str, bytes | None] = {}

    @app.job
    def child() -> None:
        seen["child"] = current_job().headers.get("traceparent")

    @app.job
    def parent() -> None:
        seen["parent"] = current_job().headers.get("traceparent")
        child.delay()

    parent.apply_async(headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    app.flush(10)
    with app.worker():
        assert wait_until(lambda: "child" in seen, timeout=30)
    assert seen["parent"] == TRACEPARENT.encode()
    # The child continues the trace (its parent span is the job's own when OpenTelemetry
    # is set up in this process, else the same header is carried on).
    assert (
        seen["child"] is not None
        and seen["child"].split(b"-")[1] == TRACEPARENT.split("-")[1].encode()
    )
