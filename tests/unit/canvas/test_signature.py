"""Signatures, steps and chord specs: ids, the JSON they travel as, what is refused."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_jobs import App, ConfigurationError, chain, chord, group
from kafka_jobs.canvas.signature import (
    ChordSpec,
    Step,
    decode_steps,
    derived_id,
    encode_steps,
)
from kafka_jobs.wire import new_job_id

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def test_derived_ids_are_hex_stable_and_distinct_across_canvases() -> None:
    # Fresh ids of one process share a prefix: derived ids must not depend on its layout.
    bases = [new_job_id() for _ in range(50)]
    ids = {derived_id(base, index) for base in bases for index in range(100)}
    assert len(ids) == 50 * 100
    assert not ids & set(bases)
    assert all(len(job_id) == 32 and int(job_id, 16) >= 0 for job_id in ids)
    assert derived_id(bases[0], 7) == derived_id(bases[0], 7)


@given(
    args=st.lists(json_values, max_size=3),
    kwargs=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    immutable=st.booleans(),
    key=st.none() | st.text(max_size=4) | st.integers(),
    topic=st.none() | st.text(min_size=1, max_size=8),
    countdown=st.none() | st.floats(min_value=0, max_value=1e6),
)
def test_steps_survive_their_header(args, kwargs, immutable, key, topic, countdown) -> None:
    step = Step(
        id="a" * 32,
        task="tasks.add",
        args=tuple(args),
        kwargs=kwargs,
        immutable=immutable,
        key=key,
        topic=topic,
        headers={"tenant": "acme"},
        countdown=countdown,
    )
    assert decode_steps(encode_steps([step, step])) == [step, step]


@given(st.from_type(object).filter(lambda v: not isinstance(v, dict)) | json_values)
def test_a_malformed_step_raises_value_error_only(data) -> None:
    with contextlib.suppress(ValueError):  # anything else fails the test
        Step.from_json(data)


@pytest.mark.parametrize(
    "data",
    [
        {"task": "t"},
        {"id": "x"},
        {"id": "", "task": "t"},
        {"id": "x", "task": "t", "args": {}},
        {"id": "x", "task": "t", "key": True},
        {"id": "x", "task": "t", "headers": {"a": 1}},
        {"id": "x", "task": "t", "countdown": "soon"},
    ],
)
def test_steps_missing_or_mistyped_fields_are_refused(data) -> None:
    with pytest.raises(ValueError):
        Step.from_json(data)


def test_a_chord_spec_names_its_members_and_survives_its_header() -> None:
    chord_id = new_job_id()
    spec = ChordSpec(chord_id, 1234, 3, Step(derived_id(chord_id, 3), "tasks.total"))
    assert ChordSpec.decode(spec.encode()) == spec
    assert spec.member_ids() == [derived_id(chord_id, i) for i in range(3)]
    for bad in (b"[]", b'{"id": "x", "at": 1}', b'{"id": "x", "at": 1, "size": -1}'):
        with pytest.raises(ValueError):
            ChordSpec.decode(bad)
    with pytest.raises(ValueError):
        ChordSpec.decode(json.dumps({"id": "x", "at": 1, "size": 1, "callback": None}))


def _app(keep: bool) -> App:
    return App(bootstrap_servers="127.0.0.1:9", default_topic="canvas", keep_result=keep)


def test_signatures_carry_arguments_options_and_the_task_topic() -> None:
    app = _app(True)

    @app.job(topic="sums")
    def add(x: int, y: int = 0) -> int:
        return x + y

    signature = add.s(1, y=2).set(key="k", headers={"tenant": "acme"})
    assert repr(signature).endswith("<locals>.add.s(1, y=2)")
    step = signature.step("b" * 32)
    assert step == Step(
        "b" * 32, add.name, (1,), {"y": 2}, key="k", topic="sums", headers={"tenant": "acme"}
    )
    assert add.si(5).step("c" * 32).immutable
    with pytest.raises(TypeError, match="unknown signature options"):
        add.s().set(eta=None)
    with pytest.raises(TypeError, match="travel as JSON"):
        add.s({1, 2}).step("d" * 32)
    with pytest.raises(TypeError, match="key must be"):
        add.s().set(key=b"bytes").step("e" * 32)


def test_a_canvas_of_tasks_that_keep_no_result_is_refused_before_anything_is_sent() -> None:
    app = _app(False)

    @app.job
    def step(x: int) -> int:
        return x

    for canvas in (chain(step.s(1), step.s()), group(step.s(1)), chord([step.s(1)], step.s())):
        with pytest.raises(ConfigurationError, match="keep_result=True"):
            canvas.delay()
    with pytest.raises(ValueError):
        chain()
    assert app.producer._client is None  # nothing was sent: no client was even made
