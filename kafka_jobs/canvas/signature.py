"""Signatures: a task with its arguments and options, and the steps they travel as.

A `Signature` is what `job.s(...)` returns: enough to enqueue the call later.
A `Step` is its wire form, carried in a record's headers (JSON) so that the
worker that finishes one job can enqueue the next one without anything else.
Ids of canvas jobs are known before anything runs (`derived_id`), so a handle
can wait for a step that has not been enqueued yet, and a re-run that enqueues
the same step again enqueues it under the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kafka_jobs.wire import H_ONCE, JSON, Headers

if TYPE_CHECKING:
    from kafka_jobs.producer import EnqueuedJob
    from kafka_jobs.task import Task

StepKey = str | int | None


def derived_id(base: str, index: int) -> str:
    """The id of the `index`-th job of the canvas whose id is `base`: 32 hex digits.

    A hash, so that it depends on nothing but the canvas id and the index (a
    worker derives a chord's member ids from the chord alone), and no job id,
    derived or fresh, is another's.
    """
    return hashlib.blake2b(f"{base}/{index}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Step:
    """One job of a canvas as the worker enqueues it: task name, arguments, routing, id.

    immutable: the previous step's value is not passed (see `Task.si`).
    key / topic / headers / countdown: as `Task.apply_async` takes them.
    """

    id: str
    task: str
    args: tuple[JSON, ...] = ()
    kwargs: Mapping[str, JSON] = field(default_factory=dict)
    immutable: bool = False
    key: StepKey = None
    topic: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    countdown: float | None = None

    def to_json(self) -> dict[str, JSON]:
        """The step as a JSON object (only the fields that differ from the defaults)."""
        data: dict[str, JSON] = {"id": self.id, "task": self.task}
        if self.args:
            data["args"] = list(self.args)
        if self.kwargs:
            data["kwargs"] = dict(self.kwargs)
        if self.immutable:
            data["immutable"] = True
        if self.key is not None:
            data["key"] = self.key
        if self.topic is not None:
            data["topic"] = self.topic
        if self.headers:
            data["headers"] = dict(self.headers)
        if self.countdown is not None:
            data["countdown"] = self.countdown
        return data

    @classmethod
    def from_json(cls, data: object) -> Step:
        """The step of a JSON object; `ValueError` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a step must be a JSON object")
        try:
            step_id, task = data["id"], data["task"]
            args, kwargs = data.get("args", []), data.get("kwargs", {})
            key, topic = data.get("key"), data.get("topic")
            headers, countdown = data.get("headers", {}), data.get("countdown")
        except KeyError as missing:
            raise ValueError(f"a step needs {missing.args[0]!r}") from None
        valid = (
            isinstance(step_id, str)
            and isinstance(task, str)
            and bool(step_id)
            and bool(task)
            and isinstance(args, list)
            and isinstance(kwargs, dict)
            and (key is None or (isinstance(key, str | int) and not isinstance(key, bool)))
            and (topic is None or isinstance(topic, str))
            and isinstance(headers, dict)
            and all(isinstance(v, str) for v in headers.values())
            and (countdown is None or isinstance(countdown, int | float))
        )
        if not valid:
            raise ValueError(f"malformed step: {data!r}")
        return cls(
            id=step_id,
            task=task,
            args=tuple(args),
            kwargs=kwargs,
            immutable=bool(data.get("immutable", False)),
            key=key,
            topic=topic,
            headers=headers,
            countdown=None if countdown is None else float(countdown),
        )


def encode_steps(steps: Sequence[Step]) -> bytes:
    """Steps as a header value."""
    return json.dumps([s.to_json() for s in steps], separators=(",", ":")).encode()


def decode_steps(raw: bytes) -> list[Step]:
    """Steps of a header value; `ValueError` when it is malformed."""
    data = json.loads(raw)
    if not isinstance(data, list):
        raise ValueError("steps must be a JSON list")
    return [Step.from_json(item) for item in data]


@dataclass(frozen=True, slots=True)
class Signature:
    """A task call to make later: `add.s(2, 3)`; enqueue it with `.delay()` or in a canvas.

    args / kwargs: given now; arguments given at enqueue come first (a chain passes
    the previous step's value as the first argument, unless `immutable`).
    options: `apply_async` options (key, topic, headers, countdown).
    """

    task: Task[..., Any]
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    immutable: bool = False

    @property
    def name(self) -> str:
        """The task's registered name."""
        return self.task.name

    def set(self, **options: Any) -> Signature:
        """A copy with these `apply_async` options (key, topic, headers, countdown)."""
        unknown = set(options) - {"key", "topic", "headers", "countdown"}
        if unknown:
            raise TypeError(f"unknown signature options: {sorted(unknown)}")
        return replace(self, options={**self.options, **options})

    def delay(self, *args: object, **kwargs: object) -> EnqueuedJob:
        """Enqueue the call, with `args` before the signature's own."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        job_id: str | None = None,
        canvas: Headers | None = None,
    ) -> EnqueuedJob:
        """Enqueue the call (`job_id`, `canvas` headers: set by chains, groups and chords)."""
        merged_args = (*args, *self.args)
        merged_kwargs = {**self.kwargs, **(kwargs or {})}
        return self.task.apply_async(
            merged_args, merged_kwargs, job_id=job_id, canvas=canvas, **self.options
        )

    def step(self, job_id: str) -> Step:
        """This call as a step the worker enqueues; `TypeError` when it cannot travel as JSON."""
        key = self.options.get("key")
        if key is not None and (not isinstance(key, str | int) or isinstance(key, bool)):
            raise TypeError(f"{self.name}: a canvas step's key must be a str or an int")
        try:
            json.dumps([self.args, self.kwargs])
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{self.name}: a canvas step's arguments travel as JSON: {exc}"
            ) from None
        return Step(
            id=job_id,
            task=self.name,
            args=tuple(json.loads(json.dumps(list(self.args)))),
            kwargs=json.loads(json.dumps(dict(self.kwargs))),
            immutable=self.immutable,
            key=key,
            topic=self.options.get("topic") or self.task.options.topic,
            headers=dict(self.options.get("headers") or {}),
            countdown=self.options.get("countdown"),
        )

    def __repr__(self) -> str:
        arguments = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}.{'si' if self.immutable else 's'}({', '.join(arguments)})"


@dataclass(frozen=True, slots=True)
class ChordSpec:
    """A chord as its members carry it: id, start time, member count, callback step.

    Member `i` has the id `derived_id(id, i)`; the callback's id is in its step.
    """

    id: str
    started_ms: int
    size: int
    callback: Step

    def member_ids(self) -> list[str]:
        """The members' job ids, in order."""
        return [derived_id(self.id, index) for index in range(self.size)]

    def encode(self) -> bytes:
        """The chord as a header value (JSON)."""
        data = {"id": self.id, "at": self.started_ms, "size": self.size}
        return json.dumps({**data, "callback": self.callback.to_json()}).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> ChordSpec:
        """The chord of a header value; `ValueError` when it is malformed."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a chord must be a JSON object")
        chord_id, started, size = data.get("id"), data.get("at"), data.get("size")
        if not (isinstance(chord_id, str) and isinstance(started, int) and isinstance(size, int)):
            raise ValueError(f"malformed chord: {data!r}")
        if size < 0:
            raise ValueError("a chord's size cannot be negative")
        return cls(chord_id, started, size, Step.from_json(data.get("callback")))


def enqueue_step(
    task: Task[..., Any], step: Step, first: Sequence[object], canvas: Headers, since_ms: int
) -> EnqueuedJob:
    """Enqueue `step` of `task` with `first` before its arguments, under the step's id.

    Marked to run once: a copy enqueued again by a re-run is skipped once the id
    has a final outcome, looked for from `since_ms` (when the canvas started).
    Without a key of its own the job id is the key, so every copy lands in one
    partition and runs after the one before.
    """
    args = (*first, *step.args)
    key = step.key if step.key is not None else task.partition_key(args, step.kwargs)
    return task.apply_async(
        args,
        step.kwargs,
        key=step.id if key is None else key,
        topic=step.topic,
        headers=step.headers or None,
        countdown=step.countdown,
        job_id=step.id,
        canvas=[*canvas, (H_ONCE, str(since_ms).encode())],
    )
