"""The Celery result backend kafkajobs:// with an in-process worker (threads pool).

The broker is kafkajobs:// too: a Celery project needs nothing but Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (celery.ping, for the worker's start check)
import pytest
from celery import Celery, chord, group, states
from celery.app.backends import by_url
from celery.contrib.testing.worker import start_worker
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult
from kombu.exceptions import EncodeError

import celery_bridge  # noqa: F401  (registers kafkajobs://)
from celery_bridge.backend import KafkaBackend
from celery_bridge.stored import StoredFormat
from celery_bridge.testing import test_transport_options
from kafka_jobs.errors import DeliveryError
from kafka_jobs.results.reader import release_reader
from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from tests.bridge.conftest import WorkerProcesses

_released: dict[str, threading.Event] = {}
_tally: Counter[str] = Counter()
_tally_lock = threading.Lock()


def _make_app(broker: BrokerInfo) -> Celery:
    app = Celery("rb", set_as_current=False)
    url = f"kafkajobs://{broker.bootstrap_servers}"
    app.conf.update(
        broker_url=url,
        broker_transport_options=test_transport_options(),
        task_default_queue=unique_name("rb-q"),
        result_backend=url,
        result_backend_transport_options={"results_topic": unique_name("rb-results")},
        result_extended=True,
        task_track_started=True,
    )

    @app.task(name="rb.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rb.fail")
    def fail(*_: object) -> None:
        raise ValueError("boom from the worker")

    @app.task(name="rb.blocked")
    def blocked(key: str) -> str:
        _released[key].wait(30)
        return key

    @app.task(name="rb.unencodable")
    def unencodable() -> object:
        return object()

    @app.task(name="rb.tally")
    def tally(values: list[int], key: str) -> int:
        with _tally_lock:
            _tally[key] += 1
        return sum(values)

    return app


@pytest.fixture(scope="module")
def app(kafka_broker: BrokerInfo) -> Iterator[Celery]:
    """A Celery app whose broker and result backend are both kafkajobs://, with its worker."""
    made = _make_app(kafka_broker)
    # The worker's start check (celery.ping) already waits for a result through the backend.
    with start_worker(made, pool="threads", concurrency=4, perform_ping_check=True):
        yield made
    # The process's reader of this topic outlives the worker: stop it with the module.
    backend = KafkaBackend(made, url=made.conf.result_backend)
    release_reader(backend.consumer_config, backend.topic, StoredFormat.name)


def test_the_scheme_names_the_backend(kafka_broker: BrokerInfo) -> None:
    cls, url = by_url(
        "kafkajobs://h1:9092;kafkajobs://h2", Celery("x", set_as_current=False).loader
    )
    assert cls is KafkaBackend and url == "kafkajobs://h1:9092;kafkajobs://h2"
    probe = Celery("x", set_as_current=False)
    probe.conf.result_backend_transport_options = {"results_partitions": 3}
    backend = KafkaBackend(probe, url=url)
    assert backend.bridge.bootstrap_servers == "h1:9092,h2:9092"
    assert backend.options.results_partitions == 3
    # result_backend_always_retry retries Kafka failures, not the task's own errors.
    assert backend.exception_safe_to_retry(DeliveryError("not acknowledged"))
    assert not backend.exception_safe_to_retry(ValueError("a bug"))


def test_get_returns_the_value_and_states_follow(app: Celery) -> None:
    result = app.tasks["rb.add"].delay(2, 3)
    assert result.get(timeout=30) == 5
    assert (result.state, result.ready(), result.successful()) == (states.SUCCESS, True, True)
    # Another backend object of the process (no Celery cache) reads the same record.
    other = KafkaBackend(app, url=app.conf.result_backend)
    assert AsyncResult(result.id, backend=other).get(timeout=10) == 5
    unknown = AsyncResult(unique_name("never-sent"), app=app)
    assert (unknown.state, unknown.ready()) == (states.PENDING, False)


def test_the_exception_is_raised_again_with_its_traceback(app: Celery) -> None:
    result = app.tasks["rb.fail"].delay()
    with pytest.raises(ValueError, match="boom from the worker"):
        result.get(timeout=30)
    assert (result.state, result.successful(), result.failed()) == (states.FAILURE, False, True)
    assert "raise ValueError" in (result.traceback or "")
    assert isinstance(result.get(propagate=False), ValueError)


def test_started_state_while_the_task_runs(app: Celery) -> None:
    key = unique_name("blocked")
    _released[key] = threading.Event()
    try:
        result = app.tasks["rb.blocked"].delay(key)
        assert wait_until(lambda: result.state == states.STARTED, 30), result.state
        assert not result.ready()
        meta = app.backend.get_task_meta(result.id, cache=False)
        assert meta["result"]["pid"] > 0 and meta["result"]["hostname"]
    finally:
        _released[key].set()
    assert result.get(timeout=30) == key
    assert result.state == states.SUCCESS


def test_result_extended_fields(app: Celery) -> None:
    result = app.tasks["rb.add"].apply_async((4, 5), kwargs={})
    assert result.get(timeout=30) == 9
    fresh = AsyncResult(result.id, backend=KafkaBackend(app, url=app.conf.result_backend))
    assert fresh.name == "rb.add"
    assert list(fresh.args) == [4, 5] and fresh.kwargs == {}
    assert fresh.queue == app.conf.task_default_queue
    assert fresh.retries == 0 and fresh.worker
    assert isinstance(fresh.date_done, datetime)


def test_forget_writes_a_tombstone(app: Celery) -> None:
    result = app.tasks["rb.add"].delay(1, 1)
    assert result.get(timeout=30) == 2
    result.forget()
    assert app.backend.get_task_meta(result.id, cache=False)["status"] == states.PENDING
    fresh = KafkaBackend(app, url=app.conf.result_backend)
    assert AsyncResult(result.id, backend=fresh).state == states.PENDING


def test_results_expire(app: Celery) -> None:
    short = KafkaBackend(app, url=app.conf.result_backend, expires=2)
    task_id = unique_name("expiring")
    short.mark_as_done(task_id, 7)
    stored_at = time.monotonic()
    assert short.get_task_meta(task_id, cache=False)["status"] == states.SUCCESS
    assert wait_until(
        lambda: short.get_task_meta(task_id, cache=False)["status"] == states.PENDING, 20
    )
    assert time.monotonic() - stored_at >= 1.5  # not before its expiry (2 s, clocks aside)


def test_group_join_save_restore_delete(app: Celery) -> None:
    add = app.tasks["rb.add"]
    result = group(add.s(i, i) for i in range(10)).delay()
    assert result.get(timeout=30) == [2 * i for i in range(10)]
    assert result.completed_count() == 10
    result.save()
    restored = GroupResult.restore(
        result.id, app=app, backend=KafkaBackend(app, url=result.backend.url)
    )
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.join(timeout=30) == [2 * i for i in range(10)]
    result.delete()
    assert GroupResult.restore(result.id, app=app) is None


def test_chord_callback_runs_once(app: Celery) -> None:
    add, tally = app.tasks["rb.add"], app.tasks["rb.tally"]
    key = unique_name("chord")
    result = chord(add.s(i, 1) for i in range(8))(tally.s(key))
    assert result.get(timeout=60) == sum(range(1, 9))
    # Whatever chord_unlock still had in flight for this chord ran before a later task.
    assert add.delay(0, 0).get(timeout=30) == 0
    assert _tally[key] == 1


def test_chord_with_a_failed_member_fails_and_skips_its_callback(app: Celery) -> None:
    add, fail, tally = app.tasks["rb.add"], app.tasks["rb.fail"], app.tasks["rb.tally"]
    key = unique_name("chord-fail")
    result = chord([add.s(1, 1), fail.s()])(tally.s(key))
    # As on every Celery backend: the header's error first, through the result's parent...
    with pytest.raises(ValueError, match="boom from the worker"):
        result.get(timeout=60)
    # ...and chord_unlock stores a ChordError as the callback's result, without running it.
    with pytest.raises(ChordError, match="boom from the worker"):
        AsyncResult(result.id, app=app).get(timeout=60)
    assert _tally[key] == 0


def test_a_failed_step_fails_the_group_that_ends_its_chain(app: Celery) -> None:
    # Celery's issue #6437: the chain's result is the group's, which waits for its members.
    add, fail = app.tasks["rb.add"], app.tasks["rb.fail"]
    result = (add.s(1, 1) | fail.s() | group(add.s(1), add.s(2))).delay()
    assert isinstance(result, GroupResult)
    with pytest.raises(ValueError, match="boom from the worker"):
        result.get(timeout=30)
    # Every member is failed in the results topic (a fresh result, not the one waited on).
    members = [AsyncResult(member.id, app=app) for member in result.results]
    assert [member.state for member in members] == [states.FAILURE, states.FAILURE]
    assert all(isinstance(member.result, ValueError) for member in members)


def test_a_value_the_serializer_cannot_encode_fails_the_task_clearly(app: Celery) -> None:
    result = app.tasks["rb.unencodable"].delay()
    with pytest.raises(EncodeError, match="not JSON serializable"):
        result.get(timeout=30)
    assert result.state == states.FAILURE


def test_waiters_share_one_reader(app: Celery) -> None:
    add = app.tasks["rb.add"]
    results = [add.delay(i, 0) for i in range(30)]
    got: list[Any] = [None] * len(results)

    def wait(index: int) -> None:
        got[index] = results[index].get(timeout=60)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert got == list(range(30))
    # Every backend object of the process (the worker's too) uses the one reader.
    fresh = KafkaBackend(app, url=app.conf.result_backend)
    assert fresh._reader() is app.backend._reader()


def test_prefork_worker_processes_store_and_read_results(
    celery_processes: Callable[[], WorkerProcesses], kafka_broker: BrokerInfo
) -> None:
    # Pool children fork from the worker: each must get its own reader and producer.
    workers = celery_processes()
    workers.config["result_backend"] = f"kafkajobs://{kafka_broker.bootstrap_servers}"
    workers.config["result_backend_transport_options"] = {
        "results_topic": unique_name("rb-prefork-results")
    }
    workers.start("prefork", "-P", "prefork", "-c", "2", "--without-mingle", "--without-gossip")
    client = workers.app()
    result = client.send_task("proj.add", (2, 3))
    assert result.get(timeout=60) == 5, workers.log("prefork")
    members = [client.signature("proj.add", (i, i)) for i in range(6)]
    # The header's results are written by the children, chord_unlock reads them there.
    callback = client.signature("proj.xsum")
    assert chord(members)(callback).get(timeout=60) == sum(2 * i for i in range(6))
    assert group(members).delay().get(timeout=60) == [2 * i for i in range(6)]
