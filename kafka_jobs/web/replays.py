"""Dead-letter replays started from the dashboard: run on a thread, progress kept to show."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from kafka_jobs import dlq
from kafka_jobs.app import App

log = logging.getLogger("kafka_jobs.web")


@dataclass
class Replay:
    """One replay: what was asked, how far it got, how it ended."""

    id: str
    topic: str
    asked: int
    done: int = 0
    total: int | None = None
    state: str = "running"  # running, done, failed
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None


class Replays:
    """Starts replays and remembers the last `keep` of them."""

    def __init__(self, app: App, keep: int = 50) -> None:
        self.app = app
        self.keep = keep
        self._lock = threading.Lock()
        self._replays: dict[str, Replay] = {}
        # One replay per topic at a time: the next one reads the markers of the last.
        self._topic_locks: dict[str, threading.Lock] = {}

    def start(self, topic: str, places: Collection[tuple[int, int]]) -> Replay:
        """Replay the letters of `topic` at these (partition, offset) places, in the background."""
        replay = Replay(uuid.uuid4().hex[:12], topic, len(places))
        with self._lock:
            self._replays[replay.id] = replay
            while len(self._replays) > self.keep:
                del self._replays[next(iter(self._replays))]
        threading.Thread(
            target=self._run, args=(replay, set(places)), name="kafka-jobs-replay", daemon=True
        ).start()
        return replay

    def get(self, replay_id: str) -> Replay | None:
        """A replay by id."""
        with self._lock:
            return self._replays.get(replay_id)

    def _run(self, replay: Replay, places: set[tuple[int, int]]) -> None:
        def progress(done: int, total: int) -> None:
            replay.done, replay.total = done, total

        with self._lock:
            topic_lock = self._topic_locks.setdefault(replay.topic, threading.Lock())
        try:
            with topic_lock:
                replayed = dlq.replay(self.app, replay.topic, only=places, progress=progress)
            replay.done = replay.total = len(replayed)
            replay.state = "done"
        except Exception as exc:
            log.exception("replay %s of %s failed", replay.id, replay.topic)
            replay.state, replay.error = "failed", str(exc)
        replay.finished = time.time()
