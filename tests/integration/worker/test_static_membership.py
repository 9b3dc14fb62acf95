"""Static membership passes through: a restart within the session timeout moves no partition."""

from __future__ import annotations

import time

from kafka_jobs.instrumentation.events import Event
from kafka_jobs.testing import unique_name, wait_until

REBALANCES = ("partitions.revoked", "partitions.lost", "partitions.assigned")
STATIC_SESSION_MS = 30_000


def test_restart_with_the_same_instance_id_does_not_rebalance_the_others(
    kafka_app, new_topic
) -> None:
    topic, group = new_topic(partitions=2), unique_name("g")
    instance = unique_name("static")

    def make(static: bool):  # type: ignore[no-untyped-def]
        # The static member's session outlasts its stop and restart even on a loaded
        # machine; the broker keeps its partitions for that long.
        config = (
            {"group.instance.id": instance, "session.timeout.ms": STATIC_SESSION_MS}
            if static
            else {}
        )
        app = kafka_app(default_topic=topic, group_id=group, consumer_config=config)

        @app.job(name="noop")
        def noop() -> None: ...

        return app

    static_app, other_app = make(True), make(False)
    other_events: list[Event] = []
    other_app.events.subscribe(other_events.append)
    static_worker = static_app.worker(dispatch_delayed=False).start()
    with other_app.worker(dispatch_delayed=False) as other:
        assert wait_until(lambda: bool(other.report()) and bool(static_worker.report()), timeout=60)
        settled = len(other_events)

        def moved() -> list[Event]:
            return [
                e
                for e in other_events[settled:]
                if e.name in REBALANCES and e.payload["partitions"]
            ]

        stopped_at = time.monotonic()
        static_worker.stop()
        assert static_worker.join(30)
        # A dynamic member leaving hands its partition over within a join (~3 s here);
        # a static one is kept for its session timeout, so nothing moves meanwhile.
        assert not wait_until(lambda: bool(moved()), timeout=4), moved()
        restarted = make(True).worker(dispatch_delayed=False).start()
        try:
            assert wait_until(lambda: bool(restarted.report()), timeout=30)
            elapsed = time.monotonic() - stopped_at
            assert elapsed < STATIC_SESSION_MS / 1000, f"restart took {elapsed:.1f} s"
            assert not moved(), f"the other member's partitions moved: {moved()}"
        finally:
            restarted.stop()
            restarted.join(30)
