"""Job results through Kafka: workers write outcomes, handles read them back."""

from __future__ import annotations

import asyncio
import threading

import pytest

import kafka_jobs
from kafka_jobs import JobFailed, ResultNotKept, ResultNotSerializable, ResultUnavailable
from kafka_jobs.testing import unique_name


def test_get_returns_the_value_and_a_new_reader_finds_it_in_kafka(kafka_app, new_topic) -> None:
    results_topic = unique_name("results")
    app = kafka_app(default_topic=new_topic(partitions=2), results_topic=results_topic)

    @app.job(keep_result=True)
    def add(x: int, y: int) -> dict[str, int]:
        return {"sum": x + y}

    with app.worker(concurrency=2):
        handle = add.delay(20, 22)
        assert handle.get(timeout=30) == {"sum": 42}
        assert handle.state == "succeeded" and handle.ready()
        assert kafka_jobs.result(handle.id, app).get(timeout=10) == {"sum": 42}
    # Another cluster configuration: another reader, with an empty cache. It finds the
    # outcome in the results topic, written by the worker (which is gone now).
    other = kafka_app(
        default_topic=app.settings.default_topic,
        results_topic=results_topic,
        kafka_config={"client.id": unique_name("fresh-reader")},
    )
    assert kafka_jobs.result(handle.id, other).get(timeout=30) == {"sum": 42}


def test_a_failed_job_raises_its_own_exception_or_job_failed(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))

    class LocalError(Exception):
        """Defined in a function: not importable by the caller's handle."""

    @app.job(keep_result=True, retries=1, backoff=0.1)
    def broken(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad input 7")
        raise LocalError("only here")

    @app.job(keep_result=True)
    def unencodable() -> object:
        return {1, 2}  # a set: not JSON

    with app.worker(concurrency=2):
        value_error, local_error, bad_value = (
            broken.delay("value"),
            broken.delay("local"),
            unencodable.delay(),
        )
        with pytest.raises(ValueError, match="bad input 7"):
            value_error.get(timeout=30)
        assert value_error.state == "dead-lettered"  # after its retry, to <topic>.dlq
        with pytest.raises(JobFailed) as failed:
            local_error.get(timeout=30)
        assert failed.value.remote_type.endswith("LocalError")
        assert failed.value.remote_message == "only here"
        assert "raise LocalError" in failed.value.remote_traceback
        with pytest.raises(ResultNotSerializable, match="cannot be encoded as JSON"):
            bad_value.get(timeout=30)


def test_unknown_ids_time_out_and_jobs_without_results_say_so(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))

    @app.job(keep_result=True)
    def kept() -> int:
        return 1

    @app.job
    def plain() -> int:
        return 2

    with app.worker(concurrency=1):
        assert kept.delay().get(timeout=30) == 1  # the results topic exists now
        with pytest.raises(ResultNotKept):
            plain.delay().get(timeout=1)
        unknown = kafka_jobs.result("no-such-job", app)
        assert unknown.state == "pending"
        with pytest.raises(ResultUnavailable):
            unknown.get(timeout=1.0)


def test_many_waiters_share_one_reader(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(partitions=3), results_topic=unique_name("results"))

    @app.job(keep_result=True, key="n")
    def square(n: int) -> int:
        return n * n

    before = {t.ident for t in threading.enumerate() if t.name == "kafka-jobs-results"}
    with app.worker(concurrency=4):
        handles = [square.delay(n) for n in range(200)]
        values: dict[int, object] = {}

        def wait(n: int) -> None:
            values[n] = handles[n].get(timeout=60)

        waiters = [threading.Thread(target=wait, args=(n,)) for n in range(200)]
        for thread in waiters:
            thread.start()
        for thread in waiters:
            thread.join(90)
    assert values == {n: n * n for n in range(200)}
    readers = [
        t for t in threading.enumerate() if t.name == "kafka-jobs-results" and t.ident not in before
    ]
    assert len(readers) == 1, readers


def test_aget_awaits_the_value(kafka_app, new_topic) -> None:
    app = kafka_app(default_topic=new_topic(), results_topic=unique_name("results"))

    @app.job(keep_result=True)
    async def greet(name: str) -> str:
        return f"hello {name}"

    with app.worker(concurrency=1):
        handle = greet.delay("kafka")
        assert asyncio.run(handle.aget(timeout=30)) == "hello kafka"
