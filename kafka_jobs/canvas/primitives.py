"""chain, group and chord: how a canvas is enqueued (what the workers then do: `canvas.steps`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kafka_jobs.canvas.results import ChainResult, ChordResult, GroupResult
from kafka_jobs.canvas.signature import (
    ChordSpec,
    Signature,
    derived_id,
    encode_steps,
    enqueue_step,
)
from kafka_jobs.errors import ConfigurationError
from kafka_jobs.results.handle import for_enqueued
from kafka_jobs.wire import H_CHAIN, H_CHORD, Headers, new_job_id, now_ms


def _keeping_results(signatures: Sequence[Signature], what: str) -> None:
    """Canvas jobs are joined through their outcomes: every task must keep its result."""
    missing = sorted({s.name for s in signatures if not s.task.keeps_result})
    if missing:
        raise ConfigurationError(
            f"a {what} needs tasks that keep their result (keep_result=True): {missing}"
        )


class Chain:
    """Steps run one after another; each step's value is the next step's first argument.

    The worker that finishes a step enqueues the next (the rest of the chain
    travels in the step's record); a failed step stops the chain. Build it with
    `kafka_jobs.chain(a.s(1), b.s(), c.s())`.
    """

    def __init__(self, *steps: Signature | Chain) -> None:
        flat: list[Signature] = []
        for step in steps:
            flat.extend(step.steps if isinstance(step, Chain) else [step])
        if not flat:
            raise ValueError("a chain needs at least one step")
        self.steps: list[Signature] = flat

    def delay(self, *args: object, **kwargs: object) -> ChainResult:
        """Enqueue the first step, with `args` before its own; returns the chain's handle."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[object] = (), kwargs: Mapping[str, object] | None = None
    ) -> ChainResult:
        """`delay` with the first step's extra arguments as a sequence and a mapping."""
        _keeping_results(self.steps, "chain")
        base = new_job_id()
        ids = [derived_id(base, index) for index in range(len(self.steps))]
        rest = [signature.step(ids[i]) for i, signature in enumerate(self.steps) if i]
        first = self.steps[0]
        canvas: Headers | None = [(H_CHAIN, encode_steps(rest))] if rest else None
        first.apply_async(args, kwargs, job_id=ids[0], canvas=canvas)
        settings = first.task.app.settings
        return ChainResult([for_enqueued(job_id, settings) for job_id in ids])

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.steps)


class Group:
    """Signatures enqueued together; their values come back in the order given."""

    def __init__(self, members: Iterable[Signature]) -> None:
        self.members = list(members)

    def delay(self, *args: object, **kwargs: object) -> GroupResult:
        """Enqueue every member, with `args` before each one's own; returns the group's handle."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[object] = (), kwargs: Mapping[str, object] | None = None
    ) -> GroupResult:
        """`delay` with the extra arguments as a sequence and a mapping."""
        _keeping_results(self.members, "group")
        group_id = new_job_id()
        return self._enqueue(group_id, args, kwargs, None)

    def _enqueue(
        self,
        base: str,
        args: Sequence[object],
        kwargs: Mapping[str, object] | None,
        chord: bytes | None,
    ) -> GroupResult:
        canvas: Headers | None = None if chord is None else [(H_CHORD, chord)]
        handles = []
        for index, member in enumerate(self.members):
            job_id = derived_id(base, index)
            member.apply_async(args, kwargs, job_id=job_id, canvas=canvas)
            handles.append(for_enqueued(job_id, member.task.app.settings))
        return GroupResult(base, handles)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"group({', '.join(repr(member) for member in self.members)})"


class Chord:
    """A group whose values, as one list, go to a callback once every member finished.

    The join happens in Kafka (see `kafka_jobs.canvas`): the callback runs once,
    also when workers crash in the middle. A failed member fails the chord: the
    callback does not run and the chord's handle raises that member's error.
    """

    def __init__(self, header: Group | Iterable[Signature], body: Signature) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = body

    def delay(self, *args: object, **kwargs: object) -> ChordResult:
        """Enqueue the members, with `args` before each one's own; returns the chord's handle."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[object] = (), kwargs: Mapping[str, object] | None = None
    ) -> ChordResult:
        """`delay` with the members' extra arguments as a sequence and a mapping."""
        _keeping_results([*self.header.members, self.body], "chord")
        chord_id = new_job_id()
        size = len(self.header)
        callback = self.body.step(derived_id(chord_id, size))
        spec = ChordSpec(chord_id, now_ms(), size, callback)
        settings = self.body.task.app.settings
        handle = for_enqueued(callback.id, settings)
        if not size:  # nothing to wait for
            enqueue_step(self.body.task, callback, ([],), [], spec.started_ms)
            return ChordResult(chord_id, GroupResult(chord_id, []), handle)
        members = self.header._enqueue(chord_id, args, kwargs, spec.encode())
        return ChordResult(chord_id, members, handle)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def chain(*steps: Signature | Chain) -> Chain:
    """`chain(a.s(1), b.s(), c.s())`: `c(b(a(1)))`, one job after another; `.delay()` it."""
    return Chain(*steps)


def group(*members: Signature | Iterable[Signature]) -> Group:
    """`group(a.s(1), a.s(2))` or `group(signatures)`: run together; `.delay()` it."""
    flat: list[Signature] = []
    for member in members:
        flat.extend([member] if isinstance(member, Signature) else member)
    return Group(flat)


def chord(header: Group | Iterable[Signature], body: Signature) -> Chord:
    """`chord(group, callback)`: the callback gets the list of the members' values."""
    return Chord(header, body)
