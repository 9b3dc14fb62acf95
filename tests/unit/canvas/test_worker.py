"""The worker's canvas hooks over fakes of the results topic and the producer: chord joins,
chain continuation, stopped chains and skipped copies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kafka_jobs.canvas.signature import ChordSpec, Step, derived_id, encode_steps
from kafka_jobs.canvas.worker import JOIN_TASK, CanvasWorker
from kafka_jobs.results.outcome import Outcome, RemoteError
from kafka_jobs.settings import Settings
from kafka_jobs.wire import H_CHAIN, H_CHORD, H_ONCE, H_REPLAYED_FROM, Envelope, new_job_id


class Acked:
    def wait(self, timeout: float | None = None) -> Acked:
        return self


@dataclass
class Sent:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]


@dataclass
class FakeProducer:
    records: list[tuple[str, str, bytes, bytes | None, list[Any]]] = field(default_factory=list)

    def enqueue(self, topic, job_id, value, key, headers, partition=None) -> Acked:
        self.records.append((topic, job_id, value, key, headers))
        return Acked()


class FakeApp:
    def __init__(self) -> None:
        self.producer = FakeProducer()


class FakeTask:
    def __init__(self, name: str, app: FakeApp) -> None:
        self.name = name
        self.app = app
        self.sent: list[Sent] = []

    def partition_key(self, args, kwargs) -> object:
        return None

    def apply_async(self, args, kwargs, **options) -> Acked:
        self.sent.append(Sent(tuple(args), dict(kwargs), options))
        return Acked()


class FakeRegistry:
    def __init__(self, *names: str) -> None:
        self.app = FakeApp()
        self.tasks = {name: FakeTask(name, self.app) for name in names}

    def task(self, name: str) -> FakeTask:
        return self.tasks[name]


class FakeReader:
    topic = "results"

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    def partitions(self, timeout: float | None = 10.0) -> int:
        return 3

    def current(self, job_id: str, since_ms: int, timeout: float = 10.0) -> Outcome | None:
        return self.outcomes.get(job_id)

    def known(self, key: str) -> Outcome | None:
        return self.outcomes.get(key)


class FakeWriter:
    def __init__(self, reader: FakeReader) -> None:
        self.written: list[Outcome] = []
        self._reader = reader

    def write(self, outcome: Outcome, *, wait: bool = True) -> None:
        self.written.append(outcome)
        known = self._reader.outcomes.get(outcome.job_id)
        if known is None or not known.ready:  # the first final outcome stands
            self._reader.outcomes[outcome.job_id] = outcome


def _worker(*names: str) -> tuple[CanvasWorker, FakeRegistry, FakeReader, FakeWriter]:
    registry = FakeRegistry(*names)
    reader = FakeReader()
    writer = FakeWriter(reader)
    worker = CanvasWorker(registry, Settings(), writer, None)  # type: ignore[arg-type]
    worker.__dict__["_reader"] = reader  # the process's shared reader, replaced
    return worker, registry, reader, writer


def _envelope(task: str, job_id: str, headers: dict[str, bytes], args=()) -> Envelope:
    return Envelope(task, job_id, tuple(args), {}, 1, 1000, None, headers)


def _chord(size: int) -> ChordSpec:
    chord_id = new_job_id()
    callback = Step(derived_id(chord_id, size), "total", topic="callbacks")
    return ChordSpec(chord_id, 500, size, callback)


def _join(worker: CanvasWorker, spec: ChordSpec) -> None:
    envelope = _envelope(JOIN_TASK, new_job_id(), {}, [json.loads(spec.encode())])
    task = worker.task_for(envelope)
    assert task is not None and task.bookkeeping and task.name == JOIN_TASK
    task.fn(*envelope.args)


def _done(job_id: str, state: str = "succeeded", value: object = None) -> Outcome:
    error = None if state == "succeeded" else RemoteError("builtins.ValueError", "no", "tb")
    return Outcome(job_id, "member", state, value=value, error=error)  # type: ignore[arg-type]


def test_a_join_fires_the_callback_once_with_the_values_in_member_order() -> None:
    worker, registry, reader, writer = _worker("total")
    spec = _chord(3)
    for index, member in enumerate(spec.member_ids()):
        reader.outcomes[member] = _done(member, value=index * 10)
    _join(worker, spec)
    _join(worker, spec)  # a later member's join: the chord has fired
    (sent,) = registry.tasks["total"].sent
    assert sent.args == ([0, 10, 20],)
    assert sent.options["job_id"] == spec.callback.id
    assert sent.options["key"] == spec.callback.id  # copies share a partition
    assert (H_ONCE, b"500") in sent.options["canvas"]
    assert [(o.job_id, o.state) for o in writer.written] == [(spec.id, "succeeded")]


def test_a_join_before_every_member_ended_does_nothing() -> None:
    worker, registry, reader, writer = _worker("total")
    spec = _chord(3)
    first, second, _ = spec.member_ids()
    reader.outcomes[first] = _done(first, value=1)
    reader.outcomes[second] = Outcome(second, "member", "retrying")
    _join(worker, spec)
    assert registry.tasks["total"].sent == [] and writer.written == []


def test_a_failed_member_fails_the_callback_with_its_error_and_nothing_fires() -> None:
    worker, registry, reader, writer = _worker("total")
    spec = _chord(3)
    first, second, third = spec.member_ids()
    reader.outcomes[first] = _done(first, value=1)
    reader.outcomes[third] = _done(third, "dead-lettered")  # the second has not ended yet
    _join(worker, spec)
    reader.outcomes[second] = _done(second, value=2)
    _join(worker, spec)
    assert registry.tasks["total"].sent == []
    (failed,) = writer.written
    assert (failed.job_id, failed.state) == (spec.callback.id, "failed")
    assert failed.error == RemoteError("builtins.ValueError", "no", "tb")


def test_a_member_enqueues_a_join_on_the_callback_topic_keyed_by_the_chord() -> None:
    worker, registry, _, _ = _worker("member")
    spec = _chord(2)
    member = _envelope("member", spec.member_ids()[0], {H_CHORD: spec.encode()})
    assert worker.succeeded(member, 4) is None
    worker.failed(member, ValueError("late"))  # failing for good also tells the chord
    assert len(registry.app.producer.records) == 2
    topic, _, value, key, headers = registry.app.producer.records[0]
    assert (topic, key) == ("callbacks", spec.id.encode())
    assert ("kj-task", JOIN_TASK.encode()) in headers
    assert ChordSpec.decode(json.dumps(json.loads(value)["args"][0])) == spec


def test_a_chain_step_enqueues_the_next_with_its_value_and_the_rest() -> None:
    worker, registry, _, _ = _worker("double", "show")
    later = [Step("2" * 32, "double", (1,)), Step("3" * 32, "show", immutable=True)]
    step = _envelope("add", "1" * 32, {H_CHAIN: encode_steps(later)})
    assert worker.succeeded(step, 21) is None
    (sent,) = registry.tasks["double"].sent
    assert sent.args == (21, 1)
    assert sent.options["job_id"] == "2" * 32
    canvas = dict(sent.options["canvas"])
    assert json.loads(canvas[H_CHAIN]) == [later[1].to_json()]
    assert canvas[H_ONCE] == b"1000"  # the first step's enqueue time, carried on
    nxt = _envelope("double", "2" * 32, {H_CHAIN: canvas[H_CHAIN], H_ONCE: b"1000"})
    assert worker.succeeded(nxt, 44) is None
    (last,) = registry.tasks["show"].sent
    assert last.args == () and H_CHAIN not in dict(last.options["canvas"])


def test_an_unknown_next_task_fails_the_step() -> None:
    worker, _, _, _ = _worker()
    step = _envelope("add", "1" * 32, {H_CHAIN: encode_steps([Step("2" * 32, "nowhere")])})
    assert "nowhere" in str(worker.succeeded(step, 1))


def test_a_failed_step_records_its_error_for_every_later_step() -> None:
    worker, _, _, writer = _worker()
    later = [Step("2" * 32, "b"), Step("3" * 32, "c")]
    worker.failed(_envelope("a", "1" * 32, {H_CHAIN: encode_steps(later)}), KeyError("gone"))
    assert [(o.job_id, o.state) for o in writer.written] == [
        ("2" * 32, "failed"),
        ("3" * 32, "failed"),
    ]
    assert all(o.error is not None and o.error.type == "builtins.KeyError" for o in writer.written)


def test_a_copy_of_a_step_that_ran_is_skipped_but_the_chain_goes_on_from_its_outcome() -> None:
    worker, registry, reader, _ = _worker("b")
    headers = {H_CHAIN: encode_steps([Step("3" * 32, "b")]), H_ONCE: b"1000"}
    copy = _envelope("a", "2" * 32, headers)
    assert worker.task_for(copy) is None  # nothing recorded yet: it runs
    reader.outcomes["2" * 32] = Outcome("2" * 32, "a", "retrying")
    assert worker.task_for(copy) is None  # retrying in place: it runs
    reader.outcomes["2" * 32] = _done("2" * 32, value=7)
    replayed = _envelope("a", "2" * 32, {**headers, H_REPLAYED_FROM: b"t/0/1"})
    assert worker.task_for(replayed) is None  # a replay from the dead letters runs
    skip = worker.task_for(copy)
    assert skip is not None and skip.bookkeeping
    skip.fn(*copy.args)
    (sent,) = registry.tasks["b"].sent
    assert sent.args == (7,) and sent.options["job_id"] == "3" * 32
    assert worker.task_for(_envelope("a", "9" * 32, {})) is None  # not a canvas copy


def test_a_malformed_chain_header_fails_the_job_with_the_reason() -> None:
    worker, _, _, _ = _worker()
    problem = worker.succeeded(_envelope("a", "1" * 32, {H_CHAIN: b"{not json"}), 1)
    assert isinstance(problem, ValueError)
    with pytest.raises(ValueError):
        ChordSpec.decode(b"{}")
