"""Jobs: the scheduler's unit of work (one partition's batch), and per-partition state."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from confluent_kafka import Message

from kafka_jobs.processing.offsets import OffsetTracker

log = logging.getLogger("kafka_jobs.worker")

if TYPE_CHECKING:
    from kafka_jobs.processing.calls import Call
    from kafka_jobs.processing.failures import Failure
    from kafka_jobs.processing.ports import Delivery


class PartitionState:
    """What this process knows about one assigned partition.

    `tracker` belongs to the listener thread. `revoked` is set by the listener and
    read by workers and user code (a plain event, so it turns true at once, even
    while every worker thread is busy).
    """

    __slots__ = (
        "_revoked",
        "committed_metadata",
        "exact_metadata",
        "failures",
        "generation",
        "given_metadata",
        "latest_metadata",
        "partition",
        "topic",
        "tracker",
        "unsettled",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.tracker = OffsetTracker()
        # Per offset: (failed runs, first failure ms), for in-place retries (a consumed
        # record's headers cannot change), and failures whose handling must be retried
        # without running the job again. Written by the worker running the partition's job.
        self.failures: dict[int, tuple[int, int]] = {}
        self.unsettled: dict[int, Failure] = {}
        # Bumped on every revocation: a record that ran across one does not count as
        # done, even if the partition came back meanwhile (its job may have given up).
        self.generation = 0
        self._revoked = threading.Event()
        # Offset metadata: given by jobs (worker threads) per offset, and the latest
        # given; what the last commit known here carried (the job's part only).
        self.given_metadata: dict[int, str] = {}
        self.latest_metadata: str | None = None
        self.exact_metadata: str | None = None
        self.committed_metadata: str | None = None

    def give_metadata(self, offset: int, text: str) -> None:
        """A job's metadata for `offset`, committed with it (worker thread)."""
        self.given_metadata[offset] = text
        self.latest_metadata = text

    def metadata_for_commit(self, committable: int, strategy: str) -> str | None:
        """The job metadata to commit at `committable` (listener thread).

        "exact": the metadata given with the highest offset below the commit;
        "current": the most recently given. Either stays until replaced.
        """
        given = self.given_metadata
        below = [offset for offset in list(given) if offset < committable]
        if below:
            top = max(below)
            self.exact_metadata = given[top]
            for offset in below:
                if offset != top:
                    given.pop(offset, None)
        chosen = self.latest_metadata if strategy == "current" else self.exact_metadata
        return chosen if chosen is not None else self.committed_metadata

    @property
    def revoked(self) -> bool:
        """True once this process lost the partition."""
        return self._revoked.is_set()

    @property
    def revoked_event(self) -> threading.Event:
        """Set when this process loses the partition: jobs wait on it (`JobContext`)."""
        return self._revoked

    def revoke(self) -> None:
        """Mark the partition as lost (listener thread)."""
        self.generation += 1
        self._revoked.set()

    def reinstate(self) -> None:
        """The partition came back to this process while its job still runs (listener thread)."""
        self._revoked.clear()

    def __repr__(self) -> str:
        return (
            f"<PartitionState {self.topic}[{self.partition}]{' revoked' if self.revoked else ''}>"
        )


class LaneBatch:
    """The lanes one partition batch was split into (virtual partitions).

    `collapsed` is set by the lane whose record failed, so the others stop early;
    the listener then re-runs the batch's unfinished records in one sequential job.
    `lanes` is read by the listener once every lane finished.
    """

    __slots__ = ("collapsed", "lanes", "last_offset", "left")

    def __init__(self, last_offset: int) -> None:
        self.collapsed = threading.Event()
        self.last_offset = last_offset
        self.lanes: list[Job] = []
        self.left = 0

    def next_offset(self) -> int:
        """The first offset of the batch a lane did not process, or one past the batch."""
        unfinished = [
            lane.next_offset() for lane in self.lanes if lane.processed < len(lane.records)
        ]
        return min(unfinished) if unfinished else self.last_offset + 1


class Job:
    """A batch of records of one partition, run in offset order by one worker thread.

    Built and scheduled by the listener; run by a worker. The worker appends to
    `done_offsets` in order (the listener may read a prefix while the job runs,
    `marked` counts how much it took) and sets `resume_from` / `retry_at` when a
    record must run again later. `blocking` jobs hold back polling of their
    subscription group until they finish.
    """

    __slots__ = (
        "__weakref__",
        "batch",
        "blocking",
        "done_offsets",
        "durations",
        "finished",
        "group_id",
        "group_metadata",
        "held",
        "hook",
        "kind",
        "manual",
        "marked",
        "pending",
        "processed",
        "rate_limited",
        "records",
        "resume_from",
        "retry_at",
        "state",
    )

    def __init__(
        self,
        group_id: str,
        state: PartitionState,
        records: Sequence[Message],
        blocking: bool = True,
        manual: bool = False,
        batch: LaneBatch | None = None,
    ) -> None:
        self.group_id = group_id
        self.batch = batch
        self.kind = "consumption"
        self.hook: Callable[[], None] | None = None
        self.group_metadata: object | None = None  # set by the listener; see transactions
        self.state = state
        self.records = records
        self.blocking = blocking
        self.manual = manual
        self.processed = 0
        # An async record of this job running on the event loop (an executor `Call`).
        self.pending: Call | None = None
        self.durations: list[float] = []  # per record run: for the guard and schedulers
        self.done_offsets: list[int] = []
        # Offsets done but held back from `done_offsets` (and so from commits) until
        # the outcome written for them (or for one before them) is acknowledged.
        self.held: list[tuple[int, Delivery | None]] = []
        self.marked = 0
        self.resume_from: int | None = None
        self.retry_at = 0.0
        # Set by the executor when `resume_from` waits for a rate-limit token, not a retry.
        self.rate_limited = False
        self.finished = False

    def release_held(self, *, wait: bool, timeout: float) -> bool:
        """Move held offsets whose outcome writes were acknowledged to `done_offsets`.

        `wait`: wait (up to `timeout` each) for every one, as the batch ends. False
        when a write failed: that record and those after it run again
        (at-least-once), from `resume_from`.
        """
        held = self.held
        released = 0
        for offset, delivery in held:
            if delivery is not None:
                if not wait and not delivery.reported:
                    break
                try:
                    delivery.wait(timeout)
                except Exception as error:
                    log.error(
                        "outcome of %s[%d]@%d not written (%s): it runs again",
                        self.topic,
                        self.partition,
                        offset,
                        error,
                    )
                    held.clear()
                    self.resume_from = offset
                    self.retry_at = time.monotonic() + 1.0
                    return False
            self.done_offsets.append(offset)
            released += 1
        del held[:released]
        return True

    @classmethod
    def lifecycle(
        cls, group_id: str, state: PartitionState, kind: str, hook: Callable[[], None]
    ) -> Job:
        """A revocation, shutdown, idle or periodic job: runs `hook`, holds no records.

        Never blocks polling, and runs even for a revoked partition (it is housekeeping).
        """
        job = cls(group_id, state, [], blocking=False)
        job.kind = kind
        job.hook = hook
        return job

    def next_offset(self) -> int:
        """Where the partition continues after this job: its first record not processed."""
        if self.resume_from is not None:
            return self.resume_from
        if self.processed < len(self.records):
            return int(self.records[self.processed].offset() or 0)
        return int(self.records[-1].offset() or 0) + 1

    def mark_progress(self) -> None:
        """Mark the records finished so far in the partition's tracker (listener thread).

        Worker threads append to `done_offsets` in order: a prefix read now is stable.
        """
        done = self.done_offsets
        count = len(done)
        if count > self.marked:
            self.state.tracker.mark_done(done[self.marked : count])
            self.marked = count

    def mark_through(self, offset: int) -> None:
        """Mark this job's records up to `offset` as done (worker thread, in offset order).

        Only on manual-offset jobs; automatic ones are marked as each record finishes.
        """
        if not self.manual:
            return
        done = self.done_offsets
        for record in self.records[len(done) :]:
            record_offset = int(record.offset() or 0)
            if record_offset > offset:
                break
            done.append(record_offset)

    @property
    def topic(self) -> str:
        """The topic of the job's records."""
        return self.state.topic

    @property
    def partition(self) -> int:
        """The partition of the job's records."""
        return self.state.partition

    @property
    def size(self) -> int:
        """How many records the job holds."""
        return len(self.records)

    def describe(self) -> dict[str, str | int | None]:
        """A small summary for logs and events."""
        first = self.records[0].offset() if self.records else None
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": first,
            "size": self.size,
        }

    def __repr__(self) -> str:
        done = " done" if self.finished else ""
        return f"<Job {self.topic}[{self.partition}] size={self.size}{done}>"
