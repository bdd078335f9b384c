"""A single-node Apache Kafka 4 broker in KRaft mode, run from Maven Central jars.

Maven copies the jars listed in infra/kafka/pom.xml into a cache folder once.
The node is both broker and controller, formatted once with
``kafka.tools.StorageTool format --standalone``, and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from infra.process import InfraError, log_tail, spawn_detached, write_pid_file
from infra.server import ManagedServer

logger = logging.getLogger(__name__)

POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
NODE_ID = 1
MIN_JAVA_VERSION = 17

# Kafka 4 brokers need Java 17. The heap is capped because the broker shares
# a small machine with Postgres, the services and the tests.
JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
FORMAT_JVM_OPTIONS = ("-Xmx256m", "-Djava.awt.headless=true")

# Marker file written into the jar folder after a complete download.
_COMPLETE_MARKER = ".complete.json"


def new_cluster_id() -> str:
    """Generate a cluster id in the form of Kafka's Uuid.randomUuid().

    That is 16 random bytes in URL-safe base64 without padding. Like Kafka, this
    skips ids that start with "-" so they cannot be mistaken for an option.
    """
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def java_executable() -> str:
    """Return the path of a Java 17+ `java`, from JAVA_HOME or PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else "java"
    java = shutil.which(candidate)
    if java is None:
        raise InfraError(
            f"Java {MIN_JAVA_VERSION}+ is needed for Kafka, but {candidate!r} was "
            "not found; install it (apt-get install openjdk-17-jre-headless) or "
            "set JAVA_HOME"
        )
    result = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False, timeout=60
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise InfraError(f"could not read the version of {java}: {result.stderr!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA_VERSION:
        raise InfraError(
            f"Kafka 4 needs Java {MIN_JAVA_VERSION} or newer, but {java} is Java "
            f"{major}; set JAVA_HOME to a newer JDK"
        )
    return java


class KafkaServer(ManagedServer):
    name = "kafka"
    # The first start of the JVM on a busy 2-core machine takes 10-20 s; the
    # bound leaves room for a slower CI machine.
    ready_timeout = 120.0
    stop_timeout = 60.0

    @property
    def home(self) -> Path:
        return self.config.kafka_dir

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def jars_dir(self) -> Path:
        return self.config.cache_dir / "kafka-jars"

    @property
    def properties_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_config_path(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def cluster_path(self) -> Path:
        """JSON file with the cluster id and the controller port used to format."""
        return self.home / "cluster.json"

    @property
    def pid_path(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def console_log_path(self) -> Path:
        """JVM stdout and stderr, which hold errors raised before log4j starts."""
        return self.home / "kafka.out"

    def cmdline_markers(self) -> Sequence[str]:
        return ("kafka.Kafka", str(self.properties_path))

    def ports(self) -> dict[str, int]:
        return {
            "PAT_KAFKA_PORT": self.config.kafka_port,
            "PAT_KAFKA_CONTROLLER_PORT": self.config.kafka_controller_port,
        }

    def address(self) -> str:
        return f"bootstrap {self.config.kafka_bootstrap}"

    def log_excerpt(self) -> str:
        return (
            f"{super().log_excerpt()}\nlast lines of {self.console_log_path}:\n"
            f"{log_tail(self.console_log_path)}"
        )

    def prepare(self) -> None:
        self.ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self.render_properties())
        self.log4j_config_path.write_text(self.render_log4j_config())
        self.ensure_formatted()

    def launch(self) -> None:
        argv = [
            java_executable(),
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_config_path}",
            f"-Dkafka.logs.dir={self.log_path.parent}",
            "-cp",
            self.classpath(),
            "kafka.Kafka",
            str(self.properties_path),
        ]
        child = spawn_detached(argv, log_path=self.console_log_path, cwd=self.home)
        write_pid_file(self.pid_path, child.pid)

    async def probe(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.config.kafka_bootstrap,
            client_id="pat-infra-probe",
            request_timeout_ms=5000,
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        node_ids = [broker["node_id"] for broker in cluster.get("brokers", [])]
        if NODE_ID not in node_ids:
            raise RuntimeError(f"broker {NODE_ID} is not in the metadata: {cluster}")

    def classpath(self) -> str:
        # The JVM expands "dir/*" to every jar in dir.
        return str(self.jars_dir / "*")

    def ensure_jars(self) -> None:
        """Download the jars of infra/kafka/pom.xml unless a complete copy exists.

        The copy counts as complete when its marker file names the current
        pom.xml checksum and every jar listed in the marker exists.
        """
        pom_sha256 = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
        if self._jars_complete(pom_sha256):
            return

        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError(
                "Maven (mvn) is needed to download the Kafka jars; "
                "install it with apt-get install maven"
            )
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = self.jars_dir.with_name(f"{self.jars_dir.name}.download")
        shutil.rmtree(staging, ignore_errors=True)
        logger.info("kafka: downloading jars of %s into %s", POM_PATH, self.jars_dir)
        command = [
            mvn,
            "--batch-mode",
            "--quiet",
            "-f",
            str(POM_PATH),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=900
        )
        jars = sorted(path.name for path in staging.glob("*.jar"))
        if result.returncode != 0 or not jars:
            raise InfraError(
                f"downloading the Kafka jars failed (mvn exit code "
                f"{result.returncode}); output:\n{result.stdout[-4000:]}"
                f"{result.stderr[-4000:]}"
            )
        marker = {"pom_sha256": pom_sha256, "jars": jars}
        (staging / _COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
        shutil.rmtree(self.jars_dir, ignore_errors=True)
        staging.rename(self.jars_dir)

    def _jars_complete(self, pom_sha256: str) -> bool:
        try:
            marker = json.loads((self.jars_dir / _COMPLETE_MARKER).read_text())
        except (FileNotFoundError, ValueError):
            return False
        if not isinstance(marker, dict) or marker.get("pom_sha256") != pom_sha256:
            return False
        jars = marker.get("jars")
        if not isinstance(jars, list) or not jars:
            return False
        return all((self.jars_dir / str(jar)).is_file() for jar in jars)

    def render_properties(self) -> str:
        host = self.config.host
        broker = f"{host}:{self.config.kafka_port}"
        controller = self.config.kafka_controller_address
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "listener.security.protocol.map": protocols,
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": controller,
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # Fewer partitions than the default 50 make the first consumer
            # group join faster on a single small node.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        lines = ["# Written by infra/kafka_server.py on every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def render_log4j_config(self) -> str:
        log_file = self.log_path
        lines = [
            "# Written by infra/kafka_server.py on every start; edits are lost.",
            "status = warn",
            "name = pat-kafka",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file}",
            f"appender.file.filePattern = {log_file}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 20MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
        ]
        return "\n".join(lines) + "\n"

    def ensure_formatted(self) -> None:
        """Format the storage once, with a cluster id that is stored for reuse."""
        cluster = self._read_cluster_file()
        if (self.data_dir / "meta.properties").is_file():
            formatted_port = cluster.get("controller_port") if cluster else None
            if formatted_port not in (None, self.config.kafka_controller_port):
                raise InfraError(
                    f"the Kafka storage in {self.data_dir} was formatted with "
                    f"controller port {formatted_port}, not "
                    f"{self.config.kafka_controller_port}; set "
                    f"PAT_KAFKA_CONTROLLER_PORT={formatted_port} or delete "
                    f"{self.home} to start with an empty broker"
                )
            return

        # Without meta.properties the folder contains no usable Kafka data,
        # for example after an interrupted format, so it is cleared.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cluster_id = str(cluster["cluster_id"]) if cluster else new_cluster_id()
        cluster_record = {
            "cluster_id": cluster_id,
            "controller_port": self.config.kafka_controller_port,
        }
        self.cluster_path.write_text(json.dumps(cluster_record, indent=2) + "\n")
        logger.info("kafka: formatting %s for cluster %s", self.data_dir, cluster_id)
        command = [
            java_executable(),
            *FORMAT_JVM_OPTIONS,
            "-cp",
            self.classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties_path),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise InfraError(
                f"formatting the Kafka storage failed (exit code {result.returncode}):"
                f"\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )

    def _read_cluster_file(self) -> dict[str, object] | None:
        try:
            record = json.loads(self.cluster_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise InfraError(
                f"{self.cluster_path} is not valid JSON: {error}"
            ) from error
        if not isinstance(record, dict) or not isinstance(
            record.get("cluster_id"), str
        ):
            raise InfraError(f"{self.cluster_path} has no cluster_id string")
        return record
