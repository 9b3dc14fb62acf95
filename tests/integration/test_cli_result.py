"""`kafka-jobs result JOB_ID`: a job's outcome read back from the results topic, with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from kafka_jobs.testing import BrokerInfo, unique_name, wait_until
from tests import ROOT


def _run(broker: BrokerInfo, results_topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`kafka-jobs result ARGS` on the session broker (the app's results topic from the env)."""
    return subprocess.run(
        [sys.executable, "-m", "kafka_jobs", "result", *args],
        cwd=ROOT,
        env=_env(broker, results_topic),
        capture_output=True,
        text=True,
        timeout=90,
    )


def _env(broker: BrokerInfo, results_topic: str) -> dict[str, str]:
    return {**broker.env(), "KAFKA_JOBS_RESULTS_TOPIC": results_topic}


def _fields(stdout: str) -> dict[str, str]:
    """The `name  value` lines above the value / traceback blocks."""
    fields = {}
    for line in stdout.splitlines():
        if line in ("value:", "traceback:"):
            break
        name, _, value = line.partition(" ")
        fields[name] = value.strip()
    return fields


def _block(stdout: str, title: str) -> str:
    """The text after a `value:` or `traceback:` line, up to the next block."""
    lines = stdout.splitlines()
    start = lines.index(f"{title}:") + 1
    end = next((i for i in range(start, len(lines)) if lines[i] == "traceback:"), len(lines))
    return "\n".join(lines[start:end])


def test_a_success_a_dead_letter_a_failure_and_an_unknown_id(
    kafka_broker, kafka_app, new_topic
) -> None:
    results_topic = unique_name("results")
    app = kafka_app(default_topic=new_topic(), results_topic=results_topic)

    @app.job(keep_result=True)
    def reserve(sku: str, count: int) -> dict[str, object]:
        return {"sku": sku, "reserved": count}

    @app.job(keep_result=True, retries=0)
    def refuse(sku: str) -> None:
        raise LookupError(f"no stock of {sku}")

    @app.job(keep_result=True, retries=0, dead_letter_topic=False)
    def give_up() -> None:
        raise ValueError("gave up")

    with app.worker(concurrency=2):
        done, dead, failed = reserve.delay("A-7", 3), refuse.delay("B-9"), give_up.delay()
        assert done.get(timeout=30) == {"sku": "A-7", "reserved": 3}
        with pytest.raises(LookupError):
            dead.get(timeout=30)
        with pytest.raises(ValueError):
            failed.get(timeout=30)
    # The worker is gone: the command finds everything in the results topic.

    succeeded = _run(kafka_broker, results_topic, done.id)
    assert succeeded.returncode == 0, succeeded.stderr
    fields = _fields(succeeded.stdout)
    assert fields["job"] == done.id and fields["task"] == reserve.name
    assert (fields["state"], fields["attempts"]) == ("succeeded", "1")
    assert fields["started"].endswith("UTC") and fields["finished"].endswith("UTC")
    assert float(fields["duration"].removesuffix(" s")) >= 0
    assert json.loads(_block(succeeded.stdout, "value")) == {"sku": "A-7", "reserved": 3}
    assert "traceback:" not in succeeded.stdout

    dead_lettered = _run(kafka_broker, results_topic, dead.id)
    assert dead_lettered.returncode == 1, dead_lettered.stderr
    fields = _fields(dead_lettered.stdout)
    assert (fields["state"], fields["task"]) == ("dead-lettered", refuse.name)
    assert (fields["error"], fields["message"]) == ("builtins.LookupError", "no stock of B-9")
    assert "raise LookupError" in _block(dead_lettered.stdout, "traceback")
    assert "value:" not in dead_lettered.stdout

    plain_failure = _run(kafka_broker, results_topic, failed.id)
    assert plain_failure.returncode == 1, plain_failure.stderr
    fields = _fields(plain_failure.stdout)
    assert (fields["state"], fields["error"]) == ("failed", "builtins.ValueError")

    unknown = _run(kafka_broker, results_topic, "no-such-job", "--timeout", "2")
    assert unknown.returncode == 2, unknown.stderr
    assert _fields(unknown.stdout)["state"].startswith("pending")
    assert "no outcome of no-such-job" in unknown.stderr


def test_a_running_job_is_not_final_and_wait_follows_it_to_the_end(
    kafka_broker, kafka_app, new_topic
) -> None:
    results_topic = unique_name("results")
    app = kafka_app(default_topic=new_topic(), results_topic=results_topic)
    release = threading.Event()

    @app.job(keep_result=True)
    def slow(n: int) -> int:
        release.wait(60)
        return n + 1

    with app.worker(concurrency=1):
        handle = slow.delay(41)
        assert wait_until(lambda: handle.state == "started", timeout=30, interval=0.2)
        # -A loads an app module; the results topic still comes from the environment.
        waiting = subprocess.Popen(
            [
                *(sys.executable, "-m", "kafka_jobs", "result", handle.id, "--wait"),
                *("--timeout", "60", "-A", "tests.integration.pool_app"),
            ],
            cwd=ROOT,
            env=_env(kafka_broker, results_topic),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            running = _run(kafka_broker, results_topic, handle.id, "--timeout", "5")
            assert running.returncode == 2, running.stderr
            fields = _fields(running.stdout)
            assert fields["state"] == "started" and fields["finished"] == "-"
            assert waiting.poll() is None, "--wait returned before the job finished"
            release.set()
            out, err = waiting.communicate(timeout=60)
        finally:
            release.set()
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate(timeout=10)
    assert waiting.returncode == 0, err
    assert _fields(out)["state"] == "succeeded"
    assert json.loads(_block(out, "value")) == 42


def test_a_dill_value_is_shown_only_to_the_holder_of_the_secret(
    kafka_broker, kafka_app, new_topic
) -> None:
    results_topic = unique_name("results")
    app = kafka_app(default_topic=new_topic(), results_topic=results_topic, signing_secret="s3cret")

    @app.job(keep_result=True, serializer="dill")
    def pair(n: int) -> frozenset[int]:
        return frozenset({n, n + 1})  # not JSON: it comes back pickled and signed

    with app.worker(concurrency=1):
        handle = pair.delay(4)
        assert handle.get(timeout=30) == frozenset({4, 5})

    env = _env(kafka_broker, results_topic)
    for secret, shown in (("s3cret", "frozenset({4, 5})"), ("other", "(not shown:")):
        env["KAFKA_JOBS_SIGNING_SECRET"] = secret
        printed = subprocess.run(
            [sys.executable, "-m", "kafka_jobs", "result", handle.id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert printed.returncode == 0, printed.stderr
        assert _block(printed.stdout, "value").startswith(shown), printed.stdout
