"""Node failures of a three-node Apache Kafka cluster under running workers and producers.

The session's `apache3` cluster (replication factor 3, min.insync.replicas 2): a partition
leader killed with -9, the workers' group coordinator killed with -9, and the whole cluster
stopped and started again on its data. The cluster is shared by the whole session, so every
scenario leaves it with all nodes registered, pass or fail (the `nodes` fixture).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_jobs import App, dlq
from kafka_jobs.apache import ApacheKafkaCluster
from kafka_jobs.errors import DeliveryError, KafkaJobsError
from kafka_jobs.producer import EnqueuedJob
from kafka_jobs.task import Task
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.chaos.conftest import SCALE, Cluster, progress, settle

pytestmark = pytest.mark.cluster

NODES = 3
NEEDS = "needs a three-node cluster started by this session: KAFKA_JOBS_TEST_BROKER=apache3"
PARTITIONS = 6  # Cluster's default
OFFSETS = "__consumer_offsets"
KEYS = 200
RATE = 200.0  # jobs a second from a continuous producer
MAX_JOBS = int(20_000 * SCALE)  # a continuous producer's bound; at RATE it is never reached
# Leadership and coordination move once the controller fences the dead broker
# (broker.session.timeout.ms, 9 s); a loaded 2-core machine needs far more slack.
FAILOVER_TIMEOUT = 90.0
FLUSH_TIMEOUT = 60.0  # above the default delivery timeout (30 s): the client gives up first
RUN_TIMEOUT = 150.0 * SCALE

Record = Task[[int, str], None]


@pytest.fixture
def nodes(kafka_broker: BrokerInfo) -> Iterator[ApacheKafkaCluster]:
    """The session's three-node cluster, made whole again afterwards even on failure."""
    nodes = kafka_broker.cluster
    if nodes is None:
        pytest.skip(NEEDS)
    if nodes.brokers < NODES:
        pytest.skip(f"{NEEDS} (this session's has {nodes.brokers} node)")
    nodes.wait_ready()
    try:
        yield nodes
    finally:
        _make_whole(nodes)


def _make_whole(nodes: ApacheKafkaCluster) -> None:
    """Start every node that is not running (killed, stopped or crashed), then wait for all."""
    for node, process in list(nodes.processes.items()):
        if process.poll() is not None:
            nodes.kill(node)  # it died by itself: reap it, so it is started below
    if not nodes.processes:
        nodes.start()
    for node in range(1, nodes.brokers + 1):
        if node not in nodes.processes:
            nodes.restart(node)
    nodes.wait_ready()


def _producer(chaos: Cluster) -> tuple[App, Record, Record]:
    """An App enqueuing the chaos app's jobs, with the default delivery timeout (30 s)."""
    app = App(
        bootstrap_servers=chaos.broker.bootstrap_servers,
        default_topic=chaos.topic,
        delay_topic_prefix=chaos.env["KAFKA_JOBS_DELAY_TOPIC_PREFIX"],
    )

    @app.job(key="key", name="chaos.record")
    def record(seq: int, key: str) -> None:
        raise AssertionError("runs in the worker processes only")

    @app.job(key="key", name="chaos.doomed")
    def doomed(seq: int, key: str) -> None:
        raise AssertionError("runs in the worker processes only")

    return app, record, doomed


class Enqueuer:
    """Enqueues `RATE` jobs a second from a thread until stopped, then flushes.

    Keeps every handle and every error a caller of `.delay()` or `flush()` would see.
    Only the thread touches the App; the handles are read as copies.
    """

    def __init__(self, chaos: Cluster, limit: int = MAX_JOBS, duration: float = RUN_TIMEOUT):
        self.app, self._record, _ = _producer(chaos)
        self._limit = limit
        self._duration = duration
        self.handles: dict[int, EnqueuedJob] = {}
        self.errors: list[tuple[int | None, str]] = []
        self.next_seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enqueuer", daemon=True)

    def start(self) -> Enqueuer:
        self._thread.start()
        return self

    def acknowledged(self, since: int = 0) -> dict[int, EnqueuedJob]:
        """Jobs from seq `since` on that the broker acknowledged so far."""
        return {s: h for s, h in self.handles.copy().items() if s >= since and h.delivered}

    def _run(self) -> None:
        started = time.monotonic()
        for seq in range(self._limit):
            if self._stop.is_set() or time.monotonic() - started > self._duration:
                break
            try:
                self.handles[seq] = self._record.delay(seq, f"k{seq % KEYS}")
            except Exception as exc:  # what a caller would get: the scenario counts it
                self.errors.append((seq, repr(exc)))
            self.next_seq = seq + 1
            ahead = (seq + 1) / RATE - (time.monotonic() - started)
            if ahead > 0:
                self._stop.wait(ahead)
        try:
            self.app.close(FLUSH_TIMEOUT)
        except Exception as exc:
            self.errors.append((None, repr(exc)))

    def stop(self) -> None:
        """Stop enqueuing and wait for the final flush (bounded by its timeout)."""
        self._stop.set()
        self._thread.join(FLUSH_TIMEOUT + 30)
        assert not self._thread.is_alive(), "the producer's final flush did not return"

    def check(self) -> int:
        """Assert that no enqueue failed and every job was acknowledged; return the count."""
        assert not self.errors, f"enqueue errors surfaced to the caller: {self.errors[:5]}"
        pending = [s for s, h in self.handles.items() if not h.delivered]
        assert not pending, f"{len(pending)} jobs not acknowledged after flush: {pending[:10]}"
        assert sorted(self.handles) == list(range(len(self.handles)))
        return len(self.handles)


def _wait_running(chaos: Cluster, jobs: int = 200) -> None:
    """Until the workers have run `jobs` jobs: whatever happens next happens mid-run."""
    assert wait_until(lambda: ledger.distinct(chaos.ledger) >= jobs, 90, interval=0.2), (
        "the workers ran nothing"
    )


def _leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    """Partition -> leader node id (-1 while none), as the cluster's metadata says.

    Empty when the metadata request fails (it may while a node is down): ask again.
    """
    try:
        metadata = admin.list_topics(topic, timeout=10).topics[topic]
    except KafkaException:
        return {}
    return {p: m.leader for p, m in metadata.partitions.items()}


def _describe(chaos: Cluster) -> Any:
    """The group's `ConsumerGroupDescription`, or None while its coordinator does not answer.

    Only while every node runs: librdkafka 2.16 aborts the process when a group request
    meets a coordinator that went away (`rd_kafka_enq_once_del_source_return: Assertion
    eonce->refcnt > 0`, confluentinc/librdkafka#4605). A fresh client each time, so no
    request of an earlier call is still waiting on a dead node.
    """
    admin = chaos.broker.admin()  # kept referenced: a dropped client never completes the future
    # Generous: on a loaded machine a new client's first answer can take many seconds.
    futures = admin.describe_consumer_groups([chaos.group], request_timeout=20)
    try:
        return futures[chaos.group].result(30)
    except (KafkaException, TimeoutError):  # not yet: ask again
        return None


def _group_is(chaos: Cluster, members: int) -> bool:
    """Stable, with `members` members."""
    found = _describe(chaos)
    return (
        found is not None
        and found.state == ConsumerGroupState.STABLE
        and len(found.members) == members
    )


def _java_hash(text: str) -> int:
    """Java's `String.hashCode()`: over UTF-16 code units, wrapping at 32 bits."""
    value = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        value = (31 * value + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _offsets_partition(admin: AdminClient, group: str) -> int:
    """The group's __consumer_offsets partition: `Utils.abs(group.hashCode()) % partitions`."""
    count = len(admin.list_topics(OFFSETS, timeout=10).topics[OFFSETS].partitions)
    value = _java_hash(group)
    return (0 if value == -(1 << 31) else abs(value)) % count


def _offsets(chaos: Cluster, timeout: float = 60.0) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the end offsets per partition, read from the broker.

    Retried (bounded): right after a restart the coordinator may still load the offsets.
    """
    partitions = [TopicPartition(chaos.topic, p) for p in range(PARTITIONS)]
    found: list[tuple[dict[int, int], dict[int, int]]] = []

    def read() -> bool:
        consumer = Consumer(
            {"bootstrap.servers": chaos.broker.bootstrap_servers, "group.id": chaos.group}
        )
        try:
            committed = consumer.committed(partitions, timeout=10)
            if any(tp.error is not None for tp in committed):
                return False
            ends = {
                tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions
            }
        except KafkaException:
            return False
        finally:
            consumer.close()
        found.append(({tp.partition: tp.offset for tp in committed}, ends))
        return True

    assert wait_until(read, timeout, interval=1.0), f"offsets of {chaos.group} unreadable"
    return found[-1]


def _all_committed(chaos: Cluster) -> bool:
    committed, ends = _offsets(chaos)
    return all(committed[p] >= ends[p] for p in ends)


def _ran(chaos: Cluster) -> dict[int, ledger.Execution]:
    """seq -> its first execution."""
    first: dict[int, ledger.Execution] = {}
    for run in ledger.executions(chaos.ledger):
        first.setdefault(run.seq, run)
    return first


def _every_acknowledged_job_ran(chaos: Cluster, enqueuer: Enqueuer, workers: list[Any]) -> int:
    """After the enqueuer stopped: no caller saw an error, the same workers finished every
    acknowledged job. Returns how many were enqueued."""
    jobs: int = enqueuer.check()
    assert all(w.poll() is None for w in workers), "a worker process died"
    settle(chaos, jobs)
    lost = set(range(jobs)) - set(_ran(chaos))
    assert not lost, f"{len(lost)} acknowledged jobs never ran: {sorted(lost)[:10]}"
    return jobs


def _wait_ran(chaos: Cluster, expected: set[int], label: str) -> bool:
    started = time.monotonic()

    def done() -> bool:
        ran = expected & set(_ran(chaos))
        progress(label, len(ran), len(expected), started)
        return ran == expected

    return wait_until(done, RUN_TIMEOUT, interval=2.0)


def _dead_letters(app: App, chaos: Cluster) -> set[tuple[int, int, int]]:
    """(seq, partition, offset) of each letter in the topic's dead-letter topic."""
    letters = dlq.read(app, f"{chaos.topic}.dlq", idle=1.0, timeout=30).letters
    return {(json.loads(d.value or b"{}")["args"][0], d.partition, d.offset) for d in letters}


def test_partition_leader_kill_9_loses_no_acknowledged_job(
    nodes: ApacheKafkaCluster, cluster: Callable[..., Cluster]
) -> None:
    chaos = cluster()
    workers = [chaos.start(), chaos.start()]
    admin = chaos.broker.admin()
    enqueuer = Enqueuer(chaos).start()
    try:
        _wait_running(chaos)
        leaders = _leaders(admin, chaos.topic)
        assert len(leaders) == PARTITIONS, leaders
        victim = Counter(leaders.values()).most_common(1)[0][0]
        assert victim in nodes.processes, leaders
        led = {p for p, node in leaders.items() if node == victim}
        kill_seq = enqueuer.next_seq
        nodes.kill(victim)
        killed = time.monotonic()

        def new_leaders() -> bool:
            now = _leaders(admin, chaos.topic)
            return all(now.get(p, -1) not in (victim, -1) for p in led)

        assert wait_until(new_leaders, FAILOVER_TIMEOUT, interval=0.5), (
            f"partitions {sorted(led)} got no new leader after node {victim} died"
        )
        failover = time.monotonic() - killed
        # Jobs enqueued after the kill reached every partition the dead node led.
        assert wait_until(
            lambda: led <= {h.partition for h in enqueuer.acknowledged(kill_seq).values()},
            FAILOVER_TIMEOUT,
            interval=0.2,
        ), "no job enqueued after the kill was acknowledged on the partitions it led"
        nodes.restart(victim)
        back_seq = enqueuer.next_seq
        assert wait_until(lambda: len(enqueuer.acknowledged(back_seq)) >= RATE, 60, 0.2)
    finally:
        enqueuer.stop()
    jobs = _every_acknowledged_job_ran(chaos, enqueuer, workers)
    assert chaos.workers == workers, "a worker had to be started again"
    print(
        f"leader kill: node {victim} led {sorted(led)}; new leaders after {failover:.1f}s; "
        f"{jobs} jobs enqueued and run, {ledger.duplicates(ledger.executions(chaos.ledger))} "
        "duplicates"
    )


def test_group_coordinator_kill_9_workers_rejoin(
    nodes: ApacheKafkaCluster, cluster: Callable[..., Cluster]
) -> None:
    chaos = cluster()
    workers = [chaos.start(), chaos.start()]
    admin = chaos.broker.admin()  # metadata only: safe while a node is down
    enqueuer = Enqueuer(chaos).start()
    try:
        _wait_running(chaos)
        assert wait_until(lambda: _group_is(chaos, 2), 120, interval=0.5), _describe(chaos)
        described = _describe(chaos)
        assert described is not None, "the group's coordinator did not answer"
        victim = described.coordinator.id
        home = _offsets_partition(admin, chaos.group)
        # The coordinator is the leader of the group's __consumer_offsets partition: watched
        # through metadata while the group APIs cannot be called (see `_describe`).
        assert wait_until(lambda: _leaders(admin, OFFSETS).get(home) == victim, 30, interval=0.5)
        nodes.kill(victim)
        killed = time.monotonic()
        assert wait_until(
            lambda: _leaders(admin, OFFSETS).get(home, -1) not in (victim, -1),
            FAILOVER_TIMEOUT,
            interval=0.5,
        ), f"no new coordinator after node {victim} died"
        moved_at, moved = time.time(), time.monotonic() - killed

        def both_committed() -> bool:
            # A commit carries the member's generation: the new coordinator accepts it only
            # from a member of the group, so each worker's commit shows it is one.
            late = {
                pid
                for pid, at, kind, _ in chaos.events()
                if kind == "offsets.committed" and at > moved_at
            }
            return {w.pid for w in workers} <= late

        assert wait_until(both_committed, FAILOVER_TIMEOUT, interval=0.5), (
            "a worker never committed through the new coordinator"
        )
        rejoined = time.monotonic() - killed
        nodes.restart(victim)
        assert wait_until(lambda: _group_is(chaos, 2), 120, interval=0.5), _describe(chaos)
    finally:
        enqueuer.stop()
    jobs = _every_acknowledged_job_ran(chaos, enqueuer, workers)
    # Once everything ran, the group's commits reach the end of every partition.
    assert wait_until(lambda: _all_committed(chaos), 60, interval=1.0), _offsets(chaos)
    assert chaos.workers == workers, "a worker had to be started again"
    print(
        f"coordinator kill: node {victim}; new coordinator after {moved:.1f}s, both workers "
        f"committed through it after {rejoined:.1f}s; {jobs} jobs enqueued and run"
    )


DONE_BEFORE = int(2_000 * SCALE)
DOOMED = 20
DELAYED = 100
DURING = 100  # enqueued while the cluster is down
AFTER = int(1_000 * SCALE)
DELAY = (20.0, 40.0)  # countdown range: due after the stop began


def test_whole_cluster_stop_start_keeps_offsets_delays_and_dead_letters(
    nodes: ApacheKafkaCluster, cluster: Callable[..., Cluster]
) -> None:
    chaos = cluster()
    workers = [chaos.start(), chaos.start()]
    app, record, doomed = _producer(chaos)
    # Seq ranges apart, so the ledger tells each kind of job from the others.
    doomed_seqs = set(range(100_000, 100_000 + DOOMED))
    delayed_seqs = range(200_000, 200_000 + DELAYED)
    during_seqs = range(300_000, 300_000 + DURING)
    after_seqs = range(400_000, 400_000 + AFTER)
    try:
        for seq in range(DONE_BEFORE):
            record.delay(seq, f"k{seq % KEYS}")
        for seq in sorted(doomed_seqs):
            doomed.delay(seq, f"k{seq % KEYS}")
        app.flush(FLUSH_TIMEOUT)
        assert _wait_ran(chaos, set(range(DONE_BEFORE)), "before the stop")
        letters: set[tuple[int, int, int]] = set()

        def all_dead_lettered() -> bool:
            letters.update(_dead_letters(app, chaos))
            return doomed_seqs <= {seq for seq, _, _ in letters}

        assert wait_until(all_dead_lettered, 90, interval=1.0), f"dead letters: {sorted(letters)}"
        assert wait_until(lambda: _all_committed(chaos), 60, interval=1.0), _offsets(chaos)
        committed_before, _ = _offsets(chaos)

        delayed = {
            seq: record.apply_async((seq, f"k{seq % KEYS}"), countdown=chaos.rng.uniform(*DELAY))
            for seq in delayed_seqs
        }
        app.flush(FLUSH_TIMEOUT)
        etas = {seq: handle.eta_ms or 0 for seq, handle in delayed.items()}
        # Otherwise some delayed jobs could have left the tiers before the stop.
        assert time.time() * 1000 < min(etas.values()), "too slow: delayed jobs already due"

        stopping = time.monotonic()
        nodes.stop()
        stopped = time.monotonic() - stopping
        # The producer holds these until the cluster is back or its delivery timeout passes.
        during = {seq: record.delay(seq, f"k{seq % KEYS}") for seq in during_seqs}
        assert all(w.poll() is None for w in workers), "a worker died while the cluster was down"
        nodes.start()
        down = time.monotonic() - stopping

        committed_after, _ = _offsets(chaos)
        moved_back = {
            p: (committed_before[p], committed_after[p])
            for p in committed_before
            if committed_after[p] < committed_before[p]
        }
        assert not moved_back, f"committed offsets went back after the restart: {moved_back}"

        failed: set[str] = set()
        try:
            app.flush(FLUSH_TIMEOUT)
        except DeliveryError as exc:  # allowed for jobs enqueued during the outage: not silent
            failed = {job_id for job_id, _ in exc.failures}
        silent = [s for s, h in during.items() if not h.delivered and h.id not in failed]
        assert not silent, f"enqueued while down, neither acknowledged nor failed: {silent}"
        # The same producer, never restarted, delivers again.
        for seq in after_seqs:
            record.delay(seq, f"k{seq % KEYS}")
        app.flush(FLUSH_TIMEOUT)
    finally:
        with contextlib.suppress(KafkaJobsError):  # cleanup only; the checks above report
            app.close(10)

    acknowledged_during = {s for s, h in during.items() if h.delivered}
    expected = set(range(DONE_BEFORE)) | set(delayed) | acknowledged_during | set(after_seqs)
    _wait_ran(chaos, expected, "after the restart")
    ran = _ran(chaos)
    lost = expected - set(ran)
    assert not lost, f"{len(lost)} acknowledged jobs never ran: {sorted(lost)[:10]}"
    early = {s: (ran[s].at, etas[s] / 1000) for s in delayed if ran[s].at * 1000 < etas[s]}
    assert not early, f"delayed jobs ran before they were due: {early}"
    assert not doomed_seqs & set(ran)
    missing = letters - _dead_letters(app, chaos)
    assert not missing, f"dead letters gone after the restart: {sorted(missing)}"
    assert all(w.poll() is None for w in workers), "a worker process died"
    assert chaos.workers == workers, "a worker had to be started again"
    print(
        f"stop/start: stopped in {stopped:.1f}s, down {down:.1f}s; offsets kept; "
        f"{DELAYED} delayed and {len(letters)} dead letters kept; "
        f"{len(acknowledged_during)}/{DURING} enqueued while down were acknowledged"
    )
