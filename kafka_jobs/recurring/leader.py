"""The recurring-jobs leader: one per worker group, chosen by Kafka, fires the schedules.

Every worker of a group with schedules runs a `Leader` thread. Each joins the
consumer group `<group>.recurring` on the single-partition, compacted topic
`<group>.schedules`; the one member that owns partition 0 leads, the others
idle in the group and take over on a rebalance (a kill -9 of the leader ends its
session after `session.timeout.ms`). A new leader:

1. opens a producer with the fixed `transactional.id` `<group>.recurring`;
   `init_transactions` fences the previous leader (a zombie's commit fails) and
   aborts its open transaction;
2. reads the topic from its beginning (it never commits offsets) to its end:
   the last fire time handled per schedule, paused flags, commands not applied;
3. then, every poll (`poll_timeout`), enqueues the fire times that are due.

A fire is one transaction: the job records (job id `recurring:<name>:<fire ms>`)
and the schedule's new state. Readers of the job topic are `read_committed`
(librdkafka's default), so either both are visible or neither, and the next
leader starts from exactly the state that matches what was enqueued: no fire time
is skipped or enqueued twice across leader changes.

Without transactions (the broker refuses `init_transactions` when the worker
first leads; logged, and not tried again by that worker; `Leader.transactions`),
a fire enqueues the jobs, waits for their acknowledgement, then writes the state.
A leader that dies between the two leaves the fire time unrecorded: the next
leader enqueues it again under the same job id (so a job may run twice for one
fire time, never zero times), and a zombie leader is not fenced. On a broker
whose `read_committed` readers still see aborted records (the embedded one), a
fenced zombie's aborted fire can run too.

Events: ``schedule.fired`` (schedule, fire_time, job_id, trigger),
``schedule.unknown_job`` (schedule, task, group), ``schedule.leading`` (group,
schedules), ``schedule.command`` (schedule, op, offset).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kafka_jobs.connection.client import Client, Key
from kafka_jobs.connection.commits import Committer, connect
from kafka_jobs.errors import KafkaJobsError
from kafka_jobs.recurring.schedule import Schedule, plan
from kafka_jobs.recurring.state import (
    Command,
    ScheduleState,
    leader_group,
    schedules_topic,
    state_key,
)
from kafka_jobs.recurring.topic import SCHEDULES_TOPIC_CONFIG, Snapshot
from kafka_jobs.transactions import writing_through
from kafka_jobs.wire import now_ms

if TYPE_CHECKING:
    from kafka_jobs.app import App
    from kafka_jobs.task import Task

log = logging.getLogger("kafka_jobs.recurring")

_INIT_TIMEOUT = 15.0
_RETRY_DELAY_MS = 1000


class Leader:
    """Leads a worker group's schedules while it owns the schedules partition.

    Thread contract: everything runs on its own thread (`start`); `stopping`
    (the worker's) ends it. `on_crash` hears an unexpected error (the worker stops).
    """

    def __init__(
        self,
        app: App,
        schedules: Mapping[str, Schedule],
        group_id: str,
        stopping: threading.Event,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.app = app
        self.schedules = dict(schedules)
        self.group_id = group_id
        self.topic = schedules_topic(group_id)
        self.stopping = stopping
        self.on_crash = on_crash
        self.leading = threading.Event()
        """Set while this worker leads and has loaded the topic (for tests and status)."""
        self._client: Client | None = None
        self._producer: Producer | None = None
        self.transactions: bool | None = None
        """None: tried when this worker first leads; False: never (set before `start`)."""
        self._owner = False
        self._snapshot = Snapshot()
        self._states: dict[str, ScheduleState] = {}
        self._reported: set[str] = set()
        self._unapplied: list[tuple[int, str, Command]] = []  # commands whose write failed
        self._retry_at: dict[str, int] = {}  # schedule -> when a failed write is tried again
        self.thread = threading.Thread(target=self._run, name="kafka-jobs-recurring", daemon=True)

    def start(self) -> None:
        """Start the leader thread."""
        self.thread.start()

    # --- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._create_topic()
            config = self.app.settings.consumer_settings(leader_group(self.group_id))
            config["enable.partition.eof"] = True  # tells when the load reached the end
            config.setdefault("fetch.wait.max.ms", 100)
            self._client = connect(config, Committer(leader_group(self.group_id)))
            self._client.subscribe([self.topic], self)
            while not self.stopping.is_set():
                for record in self._client.poll_eager(500, self.app.settings.poll_timeout):
                    self._read(record)
                if self.leading.is_set():
                    self._fire_due()
        except BaseException as error:
            log.exception("recurring-jobs leader crashed")
            self.app.events.emit("worker.error", where="recurring", error=error)
            self.on_crash(error)
        finally:
            self._resign()
            if self._client is not None:
                self._client.close()

    def _create_topic(self) -> None:
        try:
            self.app.create_topics([self.topic], partitions=1, config=SCHEDULES_TOPIC_CONFIG)
        except KafkaJobsError as exc:  # subscribing says it again if it matters
            log.warning("could not create the schedules topic %s: %s", self.topic, exc)

    def _read(self, record: Message) -> None:
        error = record.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading %s: %s", self.topic, error)
            elif self._owner and not self.leading.is_set():
                self._loaded()
            return
        if not self._owner:
            return
        if self.leading.is_set():
            # Live: only commands matter; state records are this leader's own writes.
            before = len(self._snapshot.commands)
            self._snapshot.add(record)
            self._unapplied.extend(self._snapshot.commands[before:])
            del self._snapshot.commands[:]
            self._apply_commands()
        else:
            self._snapshot.add(record)

    def _loaded(self) -> None:
        """The topic was read to its end: take its state, apply pending commands, lead."""
        self._states = dict(self._snapshot.states)
        pending = self._snapshot.pending()
        self._snapshot.commands.clear()
        self.leading.set()
        log.info(
            "leading the schedules of group %s (%d schedules, transactions %s)",
            self.group_id,
            len(self.schedules),
            "on" if self.transactions else "off",
        )
        self.app.events.emit("schedule.leading", group=self.group_id, schedules=len(self.schedules))
        for schedule in self.schedules.values():
            self._task(schedule)  # report unknown jobs now, not at their first fire time
        self._unapplied = pending
        self._apply_commands()

    # --- firing -------------------------------------------------------------------

    def _apply_commands(self) -> None:
        """Apply the commands read (in order); one whose write failed is tried again later."""
        commands, self._unapplied = self._unapplied, []
        for index, (offset, name, command) in enumerate(commands):
            if not self.leading.is_set() or not self._apply(offset, name, command):
                self._unapplied = commands[index:] if self.leading.is_set() else []
                return

    def _fire_due(self) -> None:
        now = now_ms()
        if self._unapplied and self._retry_at.get(self._unapplied[0][1], 0) <= now:
            self._apply_commands()
        for schedule in self.schedules.values():
            if not self.leading.is_set():
                return  # fenced or resigned in the middle
            state = self._states.get(schedule.name, ScheduleState())
            if state.paused or self._retry_at.get(schedule.name, 0) > now:
                continue
            task = self._task(schedule)
            if task is None:
                continue
            due = plan(schedule, state.last, now)
            if due.last == state.last and not due.fire:
                continue
            if due.missed:
                log.warning(
                    "schedule %s: %d fire time(s) missed while no leader ran (misfire=%s)",
                    schedule.name,
                    due.missed,
                    schedule.misfire,
                )
            new = dataclasses.replace(
                state,
                last=due.last,
                fired=due.fire[-1] if due.fire else state.fired,
                fired_at=now if due.fire else state.fired_at,
            )
            fires = [(schedule.job_id(fire), fire) for fire in due.fire]
            self._write(schedule, task, fires, new, trigger=False)

    def _apply(self, offset: int, name: str, command: Command) -> bool:
        """Apply one command; False when its write failed (to be tried again)."""
        schedule = self.schedules.get(name)
        state = self._states.get(name, ScheduleState())
        if schedule is None:
            log.warning("ignoring a %s command for unknown schedule %r", command.op, name)
            return True
        if offset <= state.command:
            return True  # applied by an earlier leader
        self.app.events.emit("schedule.command", schedule=name, op=command.op, offset=offset)
        now = now_ms()
        if command.op == "pause":
            new = dataclasses.replace(state, paused=True, command=offset)
            return self._write(schedule, None, [], new)
        if command.op == "resume":
            # Fire times that fell while paused are not caught up: go on from now.
            last = state.last
            if last is not None:
                last = max(last, schedule.latest_at_or_before(now))
            new = dataclasses.replace(state, paused=False, last=last, command=offset)
            return self._write(schedule, None, [], new)
        task = self._task(schedule)
        if task is None:
            return True  # reported; a leader that has the job would run it
        new = dataclasses.replace(state, command=offset, fired_at=now)
        job_id = f"recurring:{name}:trigger:{offset}"
        return self._write(schedule, task, [(job_id, now)], new, trigger=True)

    def _write(
        self,
        schedule: Schedule,
        task: Task[Any, Any] | None,
        fires: list[tuple[str, int]],
        state: ScheduleState,
        trigger: bool = False,
    ) -> bool:
        """Enqueue `fires` and record `state`: one transaction when the broker has them.

        False when nothing was recorded (the schedule is tried again a second later).
        """
        producer = self._producer
        if producer is None:
            return False
        timeout = self.app.settings.delivery_timeout
        try:
            if self.transactions:
                producer.begin_transaction()
            handles = []
            if task is not None:
                with writing_through(producer):
                    for job_id, _ in fires:
                        handles.append(
                            task.apply_async(schedule.args, schedule.kwargs, job_id=job_id)
                        )
            if not self.transactions:  # jobs first: a lost state only repeats a fire
                producer.flush(timeout)
                for handle in handles:
                    handle.wait(0)
            errors: list[KafkaError] = []
            producer.produce(
                self.topic,
                state.encode(),
                state_key(schedule.name),
                on_delivery=lambda err, _msg: errors.append(err) if err else None,
            )
            if self.transactions:
                producer.commit_transaction(timeout)
            else:
                producer.flush(timeout)
                if errors:
                    raise KafkaException(errors[0])
        except Exception as exc:  # e.g. a broker error, or a job too large to enqueue
            self._retry_at[schedule.name] = now_ms() + _RETRY_DELAY_MS
            self._failed(schedule, exc)
            return False
        self._retry_at.pop(schedule.name, None)
        self._states[schedule.name] = state
        for job_id, fire in fires:
            self.app.events.emit(
                "schedule.fired", schedule=schedule.name, fire_time=fire, job_id=job_id,
                trigger=trigger,
            )  # fmt: skip
        return True

    def _failed(self, schedule: Schedule, exc: Exception) -> None:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.fatal():
            log.error("the schedules producer was fenced or failed (%s): leading stops", exc)
            self._resign()
            return
        log.warning("schedule %s: firing failed, trying again: %s", schedule.name, exc)
        if self.transactions and self._producer is not None:
            try:
                self._producer.abort_transaction(self.app.settings.delivery_timeout)
            except KafkaException as abort:  # also when no transaction was open
                log.error("aborting the schedules transaction failed (%s): leading stops", abort)
                self._resign()

    def _task(self, schedule: Schedule) -> Task[Any, Any] | None:
        task = self.app.tasks.get(schedule.task)
        if task is None and schedule.name not in self._reported:
            self._reported.add(schedule.name)
            log.warning(
                "schedule %s: job %r is not registered in this worker; its fire times are"
                " not enqueued while this worker leads",
                schedule.name,
                schedule.task,
            )
            self.app.events.emit(
                "schedule.unknown_job", schedule=schedule.name, task=schedule.task,
                group=self.group_id,
            )  # fmt: skip
        return task

    # --- leadership (rebalance callbacks, inside poll()) --------------------------------

    def assigned(self, keys: list[Key]) -> None:
        """Partition 0 is ours: fence the previous leader, then load the topic."""
        if (self.topic, 0) not in keys:
            return
        self._owner = True
        self._snapshot = Snapshot()
        self._reported.clear()
        self._producer = self._open_producer()
        assert self._client is not None
        low, high = self._client.watermarks((self.topic, 0), timeout=10.0)
        if high <= low:  # nothing to load: no end-of-partition event may come
            self._loaded()

    def revoked(self, keys: list[Key]) -> None:
        """Another member leads from now on."""
        if (self.topic, 0) in keys:
            self._resign()

    def lost(self, keys: list[Key]) -> None:
        """The partition may be led by another member already."""
        self.revoked(keys)

    def _open_producer(self) -> Producer:
        config = dict(self.app.settings.producer_settings())
        if self.transactions is not False:
            producer = Producer({**config, "transactional.id": leader_group(self.group_id)})
            try:
                producer.init_transactions(_INIT_TIMEOUT)
            except KafkaException as exc:
                log.warning(
                    "the broker refused transactions (%s): fires are enqueued, then"
                    " recorded (a leader dying in between repeats one fire time)",
                    exc,
                )
                self.transactions = False
            else:
                self.transactions = True
                return producer
        return Producer(config)

    def _resign(self) -> None:
        if self._owner:
            log.info("no longer leading the schedules of group %s", self.group_id)
        self._owner = False
        self.leading.clear()
        self._unapplied, self._retry_at = [], {}  # the next leadership reads them again
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(1.0)
