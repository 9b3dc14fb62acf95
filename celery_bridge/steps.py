"""Worker bootsteps the bridge adds to a kafkajobs:// worker at Celery's ``worker_init``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["add_after_pool", "on_worker_init"]

# Set on a WorkController: the names of the steps added to it here.
_ADDED = "_kafkajobs_steps"
# Each step class is made once: the app's worker blueprint keeps the steps it was given
# for every worker it starts, and only a worker marked with a step's name includes it.
_made: dict[str, type] = {}


def on_worker_init(transport_cls: type, hook: Callable[[Any, type], None]) -> None:
    """Connect `hook(worker, transport_cls)` to Celery's ``worker_init`` (none without Celery)."""
    try:
        from celery import signals  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover  (kombu alone)
        return

    def on_init(sender: Any, **_: Any) -> None:
        hook(sender, transport_cls)

    signals.worker_init.connect(on_init, weak=False)


def add_after_pool(worker: Any, name: str, create: Callable[[Any], Any]) -> None:
    """Give `worker` the bootstep `name`: made after the Pool step, before the Consumer's.

    `create(worker)` makes the object whose ``start`` and ``stop`` are the step's
    (started after the pool, stopped before it). The first call for a `name` makes the
    step class; later calls reuse it.
    """
    setattr(worker, _ADDED, getattr(worker, _ADDED, frozenset()) | {name})
    worker.app.steps["worker"].add(_step(name, create))


def _step(step_name: str, make: Callable[[Any], Any]) -> type:
    step = _made.get(step_name)
    if step is None:
        from celery import bootsteps

        class Step(bootsteps.StartStopStep):  # type: ignore[misc]
            name = step_name
            # The Consumer step (last) comes after, so it sees what `make` set on the worker.
            requires = ("celery.worker.components:Pool",)

            def include_if(self, w: Any) -> bool:
                return self.name in getattr(w, _ADDED, ())

            def create(self, w: Any) -> Any:
                return make(w)

        step = _made[step_name] = Step
    return step
