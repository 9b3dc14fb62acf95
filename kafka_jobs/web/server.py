"""Serving the dashboard: a threaded WSGI server on its own thread (a context manager)."""

from __future__ import annotations

import ipaddress
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from kafka_jobs.app import App
from kafka_jobs.web.views import create_app


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardServer:
    """The dashboard of `app` on host:port (port 0: a free one), served on a daemon thread."""

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 8088,
        token: str | None = None,
        **options: float,  # create_app's sample_interval and live_refresh
    ) -> None:
        self.web = create_app(app, token=token, loopback=is_loopback(host), **options)
        self._server: BaseWSGIServer = make_server(host, port, self.web, threaded=True)
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kafka-jobs-web", daemon=True
        )

    @property
    def url(self) -> str:
        """Where the dashboard answers."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> DashboardServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and sampling."""
        self._server.shutdown()
        self._server.server_close()
        self.web.extensions["kafka_jobs"]["sampler"].stop()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
