"""Topic throttling windows per partition, and re-queueing a rate-limited job's rest."""

from __future__ import annotations

from confluent_kafka import Message

from kafka_jobs.instrumentation.events import EventBus
from kafka_jobs.options import TopicOptions
from kafka_jobs.processing.jobs import Job, LaneBatch, PartitionState
from kafka_jobs.processing.limits import Throttle
from kafka_jobs.worker.throttling import Throttles, requeue


def _records(topic: str, partition: int, first: int, count: int) -> list[Message]:
    return [Message(topic=topic, partition=partition, offset=first + n) for n in range(count)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _throttles() -> tuple[
    Throttles, list[tuple[object, float, int]], list[dict[str, object]], Clock
]:
    pauses: list[tuple[object, float, int]] = []
    events, seen = EventBus(), []
    events.subscribe(lambda event: seen.append(event.payload))
    options = {"slow": TopicOptions(throttle=Throttle(3, 10.0))}
    clock = Clock()
    throttles = Throttles(
        lambda topic: options.get(topic) or TopicOptions(),
        lambda key, until, offset: pauses.append((key, until, offset)),
        events,
        clock,
    )
    return throttles, pauses, seen, clock


def test_an_unthrottled_topic_passes_everything() -> None:
    throttles, pauses, seen, _ = _throttles()
    batch = _records("other", 0, 0, 50)
    assert throttles.admit(("other", 0), batch) == batch
    assert pauses == [] and seen == []


def test_a_partition_over_its_limit_pauses_until_the_window_ends_at_the_first_cut_record() -> None:
    throttles, pauses, seen, clock = _throttles()
    key = ("slow", 0)
    admitted = throttles.admit(key, _records("slow", 0, 0, 2))
    assert len(admitted) == 2
    clock.now = 104.0
    admitted = throttles.admit(key, _records("slow", 0, 2, 5))
    assert [r.offset() for r in admitted] == [2]  # the window's third and last
    assert pauses == [(key, 110.0, 3)]
    assert seen[0]["partition"] == 0 and seen[0]["offset"] == 3
    assert seen[0]["delay"] == 6.0
    # Fetched again before the window ended (a long-running job resumed it): nothing.
    clock.now = 105.0
    assert throttles.admit(key, _records("slow", 0, 3, 4)) == []
    assert pauses[-1] == (key, 110.0, 3)
    # A new window: three more.
    clock.now = 110.0
    assert [r.offset() for r in throttles.admit(key, _records("slow", 0, 3, 4))] == [3, 4, 5]
    assert pauses[-1] == (key, 120.0, 6)


def test_partitions_have_their_own_windows() -> None:
    throttles, pauses, _, _ = _throttles()
    assert len(throttles.admit(("slow", 0), _records("slow", 0, 0, 9))) == 3
    assert len(throttles.admit(("slow", 1), _records("slow", 1, 0, 3))) == 3
    assert [key for key, _, _ in pauses] == [("slow", 0)]
    throttles.forget([("slow", 0)])
    assert len(throttles.admit(("slow", 0), _records("slow", 0, 3, 9))) == 3  # a fresh window


def test_the_rest_of_a_rate_limited_job_runs_as_a_non_blocking_job_from_the_held_record() -> None:
    state = PartitionState("t", 0)
    job = Job("g", state, _records("t", 0, 10, 5), manual=True)
    job.processed = 2
    job.group_metadata = "meta"
    rest = requeue(job)
    assert [r.offset() for r in rest.records] == [12, 13, 14]
    assert not rest.blocking and rest.manual and rest.state is state
    assert rest.group_metadata == "meta" and rest.group_id == "g"
    assert rest.next_offset() == 12


def test_a_requeued_rest_starts_where_an_outcome_write_failed() -> None:
    job = Job("g", PartitionState("t", 0), _records("t", 0, 10, 5))
    job.processed, job.resume_from = 3, 11
    assert [r.offset() for r in requeue(job).records] == [11, 12, 13, 14]


def test_a_requeued_lane_takes_its_place_in_the_batch() -> None:
    state = PartitionState("t", 0)
    batch = LaneBatch(20)
    lanes = [
        Job("g", state, [r for r in _records("t", 0, 10, 10) if r.offset() % 2 == n], batch=batch)
        for n in (0, 1)
    ]
    batch.lanes, batch.left = list(lanes), 2
    lanes[1].processed = 1
    rest = requeue(lanes[1])
    assert batch.lanes == [lanes[0], rest] and rest.batch is batch and not rest.blocking
    assert [r.offset() for r in rest.records] == [13, 15, 17, 19]
    lanes[0].processed = 5
    assert batch.next_offset() == 13
