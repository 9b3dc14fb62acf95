"""Apache Kafka on loopback for development and tests: KRaft nodes as plain JVM children.

Apache Kafka's own jars come from Maven Central through `mvn`, once, into a per-user
cache (`$KAFKA_JOBS_CACHE`, else `$XDG_CACHE_HOME/kafka-jobs`, else
`~/.cache/kafka-jobs`); later starts need no network. Each node is one JVM running
`kafka.Kafka` in combined broker+controller mode, started directly by this process.

Without a data directory the cluster lives in a temporary one, removed on `stop()`;
with one, a later start on the same directory resumes the cluster (same ports, same
cluster id, topics and offsets kept).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from kafka_jobs.broker import die_with_parent, free_port
from kafka_jobs.errors import KafkaJobsError

DEFAULT_VERSION = "4.4.0"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"
HEAP = "512m"
LAYOUT_FILE = "cluster.json"
"""In a data directory: what a later start needs to resume the cluster."""

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-jobs</groupId>
  <artifactId>apache-kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def cache_dir() -> Path:
    """Where resolved jars are kept, one folder per Kafka version."""
    explicit = os.environ.get("KAFKA_JOBS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-jobs"


def _require(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaJobsError(f"Apache Kafka needs `{tool}` on PATH: {fix}")
    return path


def _check_version(version: str) -> None:
    if not re.fullmatch(r"4\.\d+\.\d+", version):
        raise KafkaJobsError(f"Apache Kafka version {version!r}: only 4.x.y releases are supported")


def resolve_jars(version: str = DEFAULT_VERSION) -> Path:
    """The folder of Apache Kafka `version`'s jars, downloaded through Maven on first use."""
    _check_version(version)
    home = cache_dir() / "apache-kafka" / version
    libs = home / "libs"
    if libs.is_dir():  # only ever renamed into place once complete
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first download
        if libs.is_dir():
            return libs
        mvn = _require("mvn", "install Maven (e.g. apt-get install maven)")
        (home / "pom.xml").write_text(
            _POM.format(version=version, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)
        )
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise KafkaJobsError(
                f"could not download Apache Kafka {version} through Maven (exit "
                f"{result.returncode}); check that Maven Central is reachable (settings.xml, "
                f"proxy) or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka.\n{tail}"
            )
        partial.rename(libs)
    return libs


@dataclass
class _Layout:
    """What a data directory must remember to resume a cluster."""

    cluster_id: str
    version: str
    host: str
    ports: list[int]
    controller_ports: list[int]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the JVM binds: connections of a stopped run left in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ApacheKafkaCluster:
    """N combined broker+controller Apache Kafka nodes on loopback; a context manager.

    Node ids are 1..N. Only the processes this object started are ever signalled, by
    their PIDs. Not thread-safe: drive it from one thread (the one that started it, so
    that the children's parent-death signal stays tied to a living thread).
    """

    def __init__(
        self,
        brokers: int = 1,
        port: int | None = None,
        data: Path | None = None,
        version: str = DEFAULT_VERSION,
        host: str = "127.0.0.1",
    ) -> None:
        if brokers < 1:
            raise KafkaJobsError("--brokers must be at least 1")
        _check_version(version)
        self.brokers = brokers
        self.version = version
        self.host = host
        self.keep_data = data is not None
        self.data = Path(data) if data else Path(tempfile.mkdtemp(prefix="kafka-jobs-apache-"))
        self._port = port
        self.layout: _Layout | None = None
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}
        self._java = ""
        self._libs = Path()

    @property
    def bootstrap_servers(self) -> str:
        """`host:port,...` of every node."""
        assert self.layout is not None, "start() first"
        return ",".join(f"{self.host}:{port}" for port in self.layout.ports)

    def port_of(self, node: int) -> int:
        """The client port of node `node` (1-based)."""
        assert self.layout is not None, "start() first"
        return self.layout.ports[node - 1]

    def log_path(self, node: int) -> Path:
        """The server log of node `node`."""
        return self.data / f"node-{node}" / "server.log"

    def start(self, timeout: float = 120.0) -> ApacheKafkaCluster:
        """Format (first time) and start every node; return once all brokers are registered."""
        self._java = _require("java", "install a JDK 17+ (e.g. apt-get install openjdk-17-jdk)")
        self._libs = resolve_jars(self.version)
        if self.layout is None:
            self.layout = self._load_or_create_layout()
        for node in range(1, self.brokers + 1):
            self._spawn(node)
        self.wait_ready(timeout)
        return self

    def _load_or_create_layout(self) -> _Layout:
        saved = self.data / LAYOUT_FILE
        if saved.exists():
            layout = _Layout(**json.loads(saved.read_text()))
            if len(layout.ports) != self.brokers:
                raise KafkaJobsError(
                    f"{self.data} holds a {len(layout.ports)}-node cluster: start it with "
                    f"--brokers {len(layout.ports)}, or use another --data directory"
                )
            if self._port and self._port != layout.ports[0]:
                raise KafkaJobsError(
                    f"{self.data} holds a cluster on port {layout.ports[0]}: leave out --port"
                    " or use another --data directory"
                )
            self._check_ports(layout.ports + layout.controller_ports)
            return layout
        if self._port is not None:
            self._check_ports([self._port])
        ports = [self._port or free_port(self.host)]
        ports += [free_port(self.host) for _ in range(self.brokers - 1)]
        controllers = [free_port(self.host) for _ in range(self.brokers)]
        cluster_id = self._java_tool("random-uuid").strip().splitlines()[-1]
        layout = _Layout(cluster_id, self.version, self.host, ports, controllers)
        self.data.mkdir(parents=True, exist_ok=True)
        for node in range(1, self.brokers + 1):
            properties = self._write_node_files(layout, node)
            self._java_tool("format", "-t", cluster_id, "-c", str(properties))
        saved.write_text(json.dumps(asdict(layout)))  # last: a half-made directory never resumes
        return layout

    def _check_ports(self, ports: list[int]) -> None:
        for port in ports:
            if not _port_free(self.host, port):
                raise KafkaJobsError(
                    f"port {port} on {self.host} is taken: stop what listens there or choose"
                    " another with --port"
                )

    def _java_tool(self, *args: str) -> str:
        result = subprocess.run(
            [self._java, "-cp", f"{self._libs}/*", "kafka.tools.StorageTool", *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise KafkaJobsError(f"kafka-storage {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def _write_node_files(self, layout: _Layout, node: int) -> Path:
        home = self.data / f"node-{node}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "log4j2.properties").write_text(_LOG4J.format(path=home / "server.log"))
        properties = home / "server.properties"
        properties.write_text(
            "\n".join(f"{k}={v}" for k, v in node_config(layout, node, home).items()) + "\n"
        )
        return properties

    def _spawn(self, node: int) -> None:
        home = self.data / f"node-{node}"
        self._logs[node] = open(home / "stdout.log", "ab")  # noqa: SIM115  (closed in _reap)
        self.processes[node] = subprocess.Popen(
            [
                self._java,
                f"-Xmx{HEAP}",
                "-Xms128m",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                "-cp",
                f"{self._libs}/*",
                "kafka.Kafka",
                str(home / "server.properties"),
            ],
            stdout=self._logs[node],
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,
            preexec_fn=die_with_parent,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every running node's broker is registered and unfenced."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        live = sorted(self.processes)
        for node in live:  # the client port first: an admin client would log refusals
            while not _accepts(self.host, self.port_of(node)):
                self._check_alive(node)
                if time.monotonic() > deadline:
                    raise KafkaJobsError(f"Apache Kafka node {node} did not listen in {timeout}s")
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                nodes = admin.describe_cluster(request_timeout=2).result(3).nodes
                if {n.id for n in nodes} >= set(live):
                    return
            except Exception:  # not ready yet: ask again
                pass
            time.sleep(0.1)
        raise KafkaJobsError(f"Apache Kafka brokers {live} were not all registered in {timeout}s")

    def check_alive(self) -> None:
        """Raise `KafkaJobsError`, with the tail of its log, if a started node has exited."""
        for node in self.processes:
            self._check_alive(node)

    def _check_alive(self, node: int) -> None:
        process = self.processes[node]
        if process.poll() is not None:
            log = self.log_path(node)
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            stdout = (self.data / f"node-{node}" / "stdout.log").read_text(errors="replace")
            raise KafkaJobsError(
                f"Apache Kafka node {node} exited with code {process.returncode}:\n"
                + "\n".join([*stdout.splitlines()[-10:], *tail])
            )

    def kill(self, node: int) -> None:
        """SIGKILL node `node` (failure tests); `restart(node)` brings it back."""
        process = self.processes.pop(node)
        process.kill()
        process.wait(30)
        self._reap(node)

    def restart(self, node: int, timeout: float = 120.0) -> None:
        """Start node `node` again on its data and wait until it is registered."""
        self._spawn(node)
        self.wait_ready(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every node this object started, then remove the data unless it was given.

        All at once: a quorum cannot outlive half of itself politely.
        """
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node, process in list(self.processes.items()):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
            self._reap(node)
        self.processes.clear()
        if not self.keep_data:
            shutil.rmtree(self.data, ignore_errors=True)

    def _reap(self, node: int) -> None:
        log = self._logs.pop(node, None)
        if log is not None:
            log.close()

    def __enter__(self) -> ApacheKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def node_config(layout: _Layout, node: int, home: Path) -> dict[str, str]:
    """`server.properties` of node `node`: a development cluster that answers quickly."""
    count = len(layout.ports)
    isr = 2 if count >= 3 else 1
    voters = ",".join(
        f"{i + 1}@{layout.host}:{port}" for i, port in enumerate(layout.controller_ports)
    )
    return {
        "node.id": str(node),
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://{layout.host}:{layout.ports[node - 1]},"
        f"CONTROLLER://{layout.host}:{layout.controller_ports[node - 1]}",
        "advertised.listeners": f"PLAINTEXT://{layout.host}:{layout.ports[node - 1]}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": voters,
        "log.dirs": str(home / "data"),
        # Joins in milliseconds instead of after a 3 s wait for more members.
        "group.initial.rebalance.delay.ms": "0",
        "default.replication.factor": str(count),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(count),
        "transaction.state.log.replication.factor": str(count),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(count),
        "share.coordinator.state.topic.min.isr": str(isr),
        # Fewer internal partitions: created on first use, faster on a small machine.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        # KIP-848 groups: let tests use short sessions, as they do with the classic protocol.
        "group.consumer.min.session.timeout.ms": "3000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        "group.consumer.heartbeat.interval.ms": "1000",
    }


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
