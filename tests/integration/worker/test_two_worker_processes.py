"""10 000 jobs over 6 partitions, two worker processes in one group: all run, in order."""

from __future__ import annotations

import json
from pathlib import Path

from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop

JOBS = 10_000


def test_two_workers_share_partitions_and_lose_nothing(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group = new_topic(partitions=6), new_group()
    workers = [start_worker(kafka_broker, topic, group, tmp_path) for _ in range(2)]
    try:
        # Both members own partitions before the jobs exist: otherwise the first one
        # may finish them all before the second has joined (Apache Kafka is that fast).
        def owners() -> set[int]:
            return {
                e.pid
                for e in ledger.events(tmp_path)
                if e.kind == "partitions.assigned" and json.loads(e.detail)
            }

        pids = {w.pid for w in workers}
        assert wait_until(lambda: owners() >= pids, timeout=60), ledger.events(tmp_path)
        enqueue_ledger_jobs(ledger_producer(topic), JOBS)
        assert wait_until(lambda: ledger.distinct(tmp_path) >= JOBS, timeout=120)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    executions = ledger.executions(tmp_path)
    assert {e.seq for e in executions} == set(range(JOBS))
    assert len({e.pid for e in executions}) == 2, "both processes should have run jobs"
    ledger.assert_order_per_process(executions)
