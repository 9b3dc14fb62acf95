"""The dashboard's recent results: read from the results topic's tail, per task, newest first."""

from __future__ import annotations

import pytest

pytest.importorskip("flask")

from markupsafe import escape

from kafka_jobs.testing import unique_name


def test_results_per_task_with_states_durations_and_errors(kafka_app, new_topic, dashboard) -> None:
    results_topic = unique_name("results")
    app = kafka_app(
        default_topic=new_topic(partitions=2),
        results_topic=results_topic,
        status_topic=unique_name("status"),
        summary_interval=0,
    )

    @app.job(keep_result=True, key="n")
    def square(n: int) -> int:
        return n * n

    @app.job(keep_result=True, retries=0)
    def refuse(sku: str) -> None:
        raise LookupError(f"no stock of {sku}")

    with app.worker(concurrency=2):
        handles = []
        for n in range(4):  # one after the other: each finishes after the one before
            handles.append(square.delay(n))
            assert handles[-1].get(timeout=30) == n * n
        refused = refuse.delay("B-9")
        with pytest.raises(LookupError):
            refused.get(timeout=30)

    client = dashboard(app, sample_interval=60)
    body = client.get("/api/results").get_json()
    assert (body["topic"], body["complete"], body["error"]) == (results_topic, True, None)
    assert set(body["tasks"]) == {square.name, refuse.name}
    rows = body["tasks"][square.name]
    assert [r["job_id"] for r in rows] == [h.id for h in reversed(handles)]  # newest first
    assert [r["value"] for r in rows] == ["9", "4", "1", "0"]
    for row in rows:
        assert row["state"] == "succeeded" and row["error"] is None
        assert row["duration_ms"] == row["finished_at_ms"] - row["started_at_ms"] >= 0
    (failure,) = body["tasks"][refuse.name]
    assert (failure["job_id"], failure["state"]) == (refused.id, "dead-lettered")
    assert failure["error"]["type"] == "builtins.LookupError"
    assert failure["error"]["message"] == "no stock of B-9"
    assert "raise LookupError" in failure["error"]["traceback"]

    page = client.get("/results").get_data(as_text=True)
    square_task, refuse_task = (
        f'data-task="{escape(square.name)}"',
        f'data-task="{escape(refuse.name)}"',
    )
    assert square_task in page and refuse_task in page
    assert "LookupError: no stock of B-9" in page and "dead-lettered" in page
    assert all(f'data-job="{h.id}"' in page for h in handles)
    only = client.get("/results", query_string={"task": refuse.name}).get_data(as_text=True)
    assert refuse_task in only and square_task not in only
    assert 'href="/results"' in client.get("/").get_data(as_text=True)  # next to dead letters


def test_only_a_bounded_tail_of_each_partition_is_read(kafka_app, new_topic) -> None:
    from kafka_jobs.web.results import read_recent

    app = kafka_app(
        default_topic=new_topic(),
        results_topic=unique_name("results"),
        results_partitions=1,
    )

    @app.job(keep_result=True)
    def echo(n: int) -> int:
        return n

    with app.worker(concurrency=1):
        handles = [echo.delay(n) for n in range(6)]
        assert [h.get(timeout=30) for h in handles] == list(range(6))
    everything = read_recent(app)
    assert [r.job_id for r in everything.by_task[echo.name]] == [h.id for h in reversed(handles)]
    tail = read_recent(app, per_partition=2)
    assert tail.records == 2 and tail.complete
    (newest,) = [r for r in tail.by_task[echo.name] if r.job_id == handles[-1].id]
    assert newest.state == "succeeded"
    assert handles[0].id not in {r.job_id for r in tail.by_task[echo.name]}


def test_no_results_topic_yet_is_said_not_failed(kafka_app, dashboard) -> None:
    app = kafka_app(results_topic=unique_name("results"), status_topic=unique_name("status"))
    client = dashboard(app, sample_interval=60)
    body = client.get("/api/results").get_json()
    assert body["tasks"] == {} and "no results topic" in body["error"]
    page = client.get("/results")
    assert page.status_code == 200 and "no results topic" in page.get_data(as_text=True)


def test_a_rerun_keeps_the_first_final_outcome_and_a_tombstone_removes_the_job(
    kafka_broker, kafka_app, new_topic
) -> None:
    from confluent_kafka import Producer

    from kafka_jobs.results.outcome import Outcome, partition_of
    from kafka_jobs.web.results import read_recent

    results_topic = unique_name("results")
    app = kafka_app(default_topic=new_topic(), results_topic=results_topic, results_partitions=2)

    @app.job(keep_result=True)
    def echo(n: int) -> int:
        return n

    with app.worker(concurrency=1):
        kept, deleted = echo.delay(1), echo.delay(2)
        assert (kept.get(timeout=30), deleted.get(timeout=30)) == (1, 2)
    # At-least-once: a re-run writes a second final outcome; compaction's delete marker.
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    rerun = Outcome(kept.id, echo.name, "failed", attempts=2, finished_at_ms=1)
    for job_id, value in ((kept.id, rerun.encode()), (deleted.id, None)):
        producer.produce(results_topic, value, job_id.encode(), partition=partition_of(job_id, 2))
    assert producer.flush(30) == 0
    (row,) = read_recent(app).by_task[echo.name]
    assert (row.job_id, row.state, row.value, row.attempts) == (kept.id, "succeeded", "1", 1)
