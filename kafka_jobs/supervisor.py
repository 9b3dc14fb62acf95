"""`kafka-jobs worker --processes N`: N worker processes in one group, kept running.

The supervisor starts each child as ``python -m kafka_jobs worker`` with the
same arguments (so every pool works as it does alone), restarts a child that
dies (after 1 s, doubling up to 30 s while it keeps dying young; a child that
ran a minute starts the count again), recycles a child whose resident memory
passed ``--max-memory-per-child`` with a graceful stop, and on SIGTERM / SIGINT
asks every child to stop gracefully, waits for them, and exits 0 when they all
stopped cleanly. The children share the consumer group, so Kafka spreads the
partitions over them. With ``--health-port`` the supervisor serves `/live` and
`/ready` for all of them, asking each child's own health port on loopback.
Resident memory is read from /proc (Linux).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from kafka_jobs.broker import free_port
from kafka_jobs.instrumentation.health import HealthServer, Verdict

log = logging.getLogger("kafka_jobs.supervisor")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long resets its slot's backoff
MEMORY_CHECK_EVERY = 5.0
_OWN_FLAGS = {"--processes": 1, "--max-memory-per-child": 1, "--health-port": 1, "--health-host": 1}


def child_arguments(argv: list[str]) -> list[str]:
    """The `kafka-jobs` arguments of a child: the supervisor's own flags removed."""
    kept: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = 0 if "=" in arg else _OWN_FLAGS[name]
            continue
        kept.append(arg)
    return kept


def process_count(value: str) -> int:
    """`--processes`: a positive count, or `auto` for the machine's cores."""
    if value == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("--processes must be at least 1 (or auto)")
    return count


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Slot:
    """One child position: its current process and its restart bookkeeping."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float = 0.0
    health_port: int = 0
    recycling: bool = field(default=False)


class Supervisor:
    """Runs and watches the children; `run()` returns the exit code."""

    def __init__(
        self,
        argv: list[str],
        processes: int,
        *,
        max_memory_mb: float | None = None,
        shutdown_timeout: float = 30.0,
        health: tuple[int, str] | None = None,
    ) -> None:
        self._command = [sys.executable, "-m", "kafka_jobs", *child_arguments(argv)]
        self._slots = [Slot(i) for i in range(processes)]
        self._max_memory_mb = max_memory_mb
        self._shutdown_timeout = shutdown_timeout
        self._health = health
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> int:
        """Start the children, keep them running until SIGTERM / SIGINT, stop them."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        server = None
        if self._health is not None:
            port, host = self._health
            server = HealthServer(self, port, host).start()
        log.info("supervisor: starting %d worker processes", len(self._slots))
        try:
            next_memory_check = time.monotonic() + MEMORY_CHECK_EVERY
            while not self._stopping.is_set():
                now = time.monotonic()
                for slot in self._slots:
                    self._tend(slot, now)
                if self._max_memory_mb is not None and now >= next_memory_check:
                    next_memory_check = now + MEMORY_CHECK_EVERY
                    self._check_memory()
                self._stopping.wait(0.2)
            return self._stop_all()
        finally:
            if server is not None:
                server.close()

    # --- children ----------------------------------------------------------------

    def _tend(self, slot: Slot, now: float) -> None:
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                if now - slot.started >= HEALTHY_AFTER:
                    slot.backoff = FIRST_BACKOFF
                return
            with self._lock:
                slot.process = None
            if slot.recycling:
                log.info("supervisor: child %d (pid %d) recycled", slot.index, process.pid)
                slot.recycling, slot.restart_at = False, now
            else:
                slot.restart_at = now + slot.backoff
                log.warning(
                    "supervisor: child %d (pid %d) exited with %s; restarting in %.0fs",
                    slot.index,
                    process.pid,
                    code,
                    slot.backoff,
                )
                slot.backoff = min(slot.backoff * 2, MAX_BACKOFF)
        if now >= slot.restart_at:
            self._start(slot, now)

    def _start(self, slot: Slot, now: float) -> None:
        command = list(self._command)
        if self._health is not None:
            slot.health_port = free_port("127.0.0.1")
            command += ["--health-port", str(slot.health_port), "--health-host", "127.0.0.1"]
        process = subprocess.Popen(command)
        with self._lock:
            slot.process, slot.started = process, now
        log.info("supervisor: child %d started (pid %d)", slot.index, process.pid)

    def _check_memory(self) -> None:
        assert self._max_memory_mb is not None
        for slot in self._slots:
            process = slot.process
            if process is None or slot.recycling:
                continue
            used = resident_mb(process.pid)
            if used > self._max_memory_mb:
                log.warning(
                    "supervisor: child %d (pid %d) uses %.0f MiB (limit %.0f): recycling it",
                    slot.index,
                    process.pid,
                    used,
                    self._max_memory_mb,
                )
                slot.recycling = True
                process.send_signal(signal.SIGTERM)

    def _stop_all(self) -> int:
        running = [slot.process for slot in self._slots if slot.process is not None]
        log.info("supervisor: stopping %d worker processes", len(running))
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._shutdown_timeout + 10
        codes = []
        for process in running:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("supervisor: pid %d did not stop in time: killing it", process.pid)
                process.kill()
                codes.append(process.wait())
        return 0 if all(code == 0 for code in codes) else 1

    # --- health (the HealthServer asks) ------------------------------------------

    def live(self) -> Verdict:
        """Live unless a running child says it is not (a restarting one is being handled)."""
        answers = self._ask("/live")
        stalled = {k: v for k, v in answers.items() if v[0] == 503}
        return Verdict(not stalled, {"children": {k: v[1] for k, v in answers.items()}})

    def ready(self) -> Verdict:
        """Ready when every child runs and answers ready."""
        answers = self._ask("/ready")
        ok = len(answers) == len(self._slots) and all(v[0] == 200 for v in answers.values())
        return Verdict(ok, {"children": {k: v[1] for k, v in answers.items()}})

    def _ask(self, path: str) -> dict[str, tuple[int, object]]:
        with self._lock:
            running = [(s.process.pid, s.health_port) for s in self._slots if s.process]
        answers: dict[str, tuple[int, object]] = {}
        for pid, port in running:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    answers[str(pid)] = (r.status, json.loads(r.read()))
            except urllib.error.HTTPError as refused:
                answers[str(pid)] = (refused.code, {"status": refused.code})
            except OSError:  # starting, not listening yet
                answers[str(pid)] = (0, {"status": "starting"})
        return answers
