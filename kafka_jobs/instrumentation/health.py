"""Liveness and readiness of a running worker over HTTP, for orchestrators' probes.

``GET /live``: 200 while every listener's fetch loop is alive and has polled
within `stall_after` seconds (default: the consumer's ``max.poll.interval.ms``,
past which the member has left its group anyway); 503 otherwise, naming the
stalled group. A blocking batch that runs longer than that, or a wedged loop,
makes the worker not live, and a restart is the cure.

``GET /ready``: 200 once the worker started and every listener has partitions
assigned and is polling; 503 before (group join) and after it stopped.

Both answer a small JSON body. The server is a daemon thread; only GET is served.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("kafka_jobs.health")


class Listened(Protocol):
    """What health needs of a listener (`kafka_jobs.worker.listener.Listener`)."""

    @property
    def since_poll(self) -> float:
        """Seconds since its last poll."""

    @property
    def thread(self) -> threading.Thread:
        """Its fetch loop's thread."""

    @property
    def states(self) -> Mapping[tuple[str, int], object]:
        """Its assigned partitions."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One probe's answer."""

    ok: bool
    detail: dict[str, object]


class Health:
    """Judges liveness and readiness from the worker's listeners (any thread)."""

    def __init__(
        self, listeners: Sequence[Listened], stall_after: float, started: Callable[[], bool]
    ) -> None:
        self._listeners = listeners
        self._stall_after = stall_after
        self._started = started

    def live(self) -> Verdict:
        """Every fetch loop alive and polling within `stall_after`."""
        stalled = {}
        for listener in self._listeners:
            name = listener.thread.name
            if self._started() and not listener.thread.is_alive():
                stalled[name] = "fetch loop ended"
            elif listener.since_poll > self._stall_after:
                stalled[name] = f"no poll for {listener.since_poll:.1f}s"
        return Verdict(not stalled, {"stalled": stalled, "stall_after": self._stall_after})

    def ready(self) -> Verdict:
        """Started, and every listener assigned and polling."""
        waiting = [
            listener.thread.name
            for listener in self._listeners
            if not (listener.thread.is_alive() and listener.states)
        ]
        ok = self._started() and not waiting and self.live().ok
        return Verdict(ok, {"started": self._started(), "unassigned": waiting})


class Probes(Protocol):
    """What a `HealthServer` asks (`Health`, or the supervisor for its children)."""

    def live(self) -> Verdict:
        """The `/live` answer."""

    def ready(self) -> Verdict:
        """The `/ready` answer."""


class HealthServer:
    """Serves `/live` and `/ready` of `health` on host:port (daemon thread)."""

    def __init__(self, health: Probes, port: int, host: str = "0.0.0.0") -> None:
        probes = {"/live": health.live, "/ready": health.ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                probe = probes.get(self.path.split("?", 1)[0])
                if probe is None:
                    self.send_error(404)
                    return
                verdict = probe()
                body = json.dumps({"ok": verdict.ok, **verdict.detail}).encode()
                self.send_response(200 if verdict.ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kafka-jobs-health", daemon=True
        )

    def start(self) -> HealthServer:
        """Start serving; returns itself."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
