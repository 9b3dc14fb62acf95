"""`kafka-jobs worker --health-port`: /ready after the group join, /live until polling stalls."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from kafka_jobs.broker import free_port
from kafka_jobs.testing import BrokerInfo, wait_until
from tests import ledger
from tests.integration.conftest import enqueue_ledger_jobs, start_worker, stop


def _probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        body = refused.read()
        return refused.code, json.loads(body) if refused.code == 503 else {}
    except OSError:  # not listening yet
        return 0, {}


def test_ready_after_the_join_and_not_live_while_a_blocking_batch_holds_polling(
    kafka_broker: BrokerInfo, new_topic, new_group, ledger_producer, tmp_path: Path
) -> None:
    topic, group, port = new_topic(), new_group(), free_port()
    worker = start_worker(
        kafka_broker,
        topic,
        group,
        tmp_path,
        sleep=4.0,  # each job blocks polling for 4 s (a regular, not long-running, topic)
        concurrency=1,
        extra_args=(
            "--health-port",
            str(port),
            "--health-host",
            "127.0.0.1",
            "--health-stall",
            "1.5",
        ),
    )
    try:
        assert wait_until(lambda: _probe(port, "/ready")[0] == 200, timeout=60), _probe(
            port, "/ready"
        )
        assert _probe(port, "/live")[0] == 200
        enqueue_ledger_jobs(ledger_producer(topic), 1)
        # While the job runs the listener does not poll: past 1.5 s it is not live.
        stalled: dict[str, object] = {}

        def not_live() -> bool:
            status, body = _probe(port, "/live")
            stalled.update(body)
            return status == 503

        assert wait_until(not_live, timeout=30)
        assert "no poll for" in json.dumps(stalled["stalled"]), stalled
        assert wait_until(lambda: ledger.distinct(tmp_path) == 1, timeout=30)
        assert wait_until(lambda: _probe(port, "/live")[0] == 200, timeout=15)
        assert _probe(port, "/nothing")[0] == 404
    finally:
        assert stop(worker) == 0
