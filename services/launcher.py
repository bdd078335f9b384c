"""Run the four services as local processes, for the demo and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICES = ("settings", "profile", "tokens", "notifier")
DEFAULT_PORTS = {"settings": 8101, "profile": 8102, "tokens": 8103, "notifier": 8104}
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """One running replica of a service, which can be killed and restarted."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signum)

    def wait_stopped(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self.running():
                assert self.process is not None
                tail = self.log.read_text(errors="replace")[-3000:]
                code = self.process.returncode
                raise RuntimeError(f"{self.name} exited with {code} on start:\n{tail}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        message = f"{self.name} did not become ready in {START_TIMEOUT_SECONDS:.0f} s"
        raise TimeoutError(message)


@dataclass
class Stack:
    """The running services: the first replica of each, and any extra ones."""

    replicas: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    _labels: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return {name: replicas[0].url for name, replicas in self.replicas.items()}

    @property
    def logs(self) -> dict[str, Path]:
        return {
            f"{name}.{index}": replica.log
            for name, replicas in self.replicas.items()
            for index, replica in enumerate(replicas)
        }

    def add_replica(
        self,
        name: str,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
        label: str | None = None,
    ) -> ServiceProcess:
        """Start one more replica of ``name`` and wait until it is ready.

        The replica shares the database, topics and configuration of the
        first one, except for ``extra_env``, and is stopped with the stack.
        """
        first = self.replicas[name][0]
        port = port or free_port()
        label = label or f"{name}.{len(self.replicas[name])}"
        env = {**first.env, **(extra_env or {}), "PAT_HTTP_PORT": str(port)}
        replica = ServiceProcess(name, port, env, first.log.with_name(f"{label}.log"))
        replica.start()
        self.replicas[name].append(replica)
        self._labels[label] = replica
        replica.wait_ready()
        return replica

    def start_replica(
        self,
        name: str,
        label: str,
        port: int,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        """Start a replica known by ``label``; return its URL."""
        return self.add_replica(name, extra_env, port, label).url

    def stop_process(self, label: str) -> None:
        """Stop the replica started with ``label``."""
        replica = self._labels.pop(label)
        replica.signal(signal.SIGTERM)
        replica.wait_stopped(STOP_TIMEOUT_SECONDS)
        self.replicas[replica.name].remove(replica)

    def stop(self) -> None:
        every = [r for replicas in self.replicas.values() for r in replicas]
        for replica in every:
            replica.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for replica in every:
            replica.wait_stopped(deadline - time.monotonic())


def start_stack(
    dsns: dict[str, str],
    kafka_bootstrap: str,
    smtp_port: int,
    log_dir: Path,
    topic_prefix: str = "pat.",
    ports: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """Start every service and wait until each returns 200 from /readyz."""
    ports = ports or DEFAULT_PORTS
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
    log_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "PAT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PAT_TOPIC_PREFIX": topic_prefix,
        "PAT_PROFILE_URL": urls["profile"],
        "PAT_TOKENS_URL": urls["tokens"],
        "PAT_SMTP_PORT": str(smtp_port),
        **(extra_env or {}),
    }
    stack = Stack()
    try:
        for name in SERVICES:
            env = {
                **os.environ,
                **common,
                "PAT_DATABASE_URL": dsns[name],
                "PAT_HTTP_PORT": str(ports[name]),
            }
            replica = ServiceProcess(name, ports[name], env, log_dir / f"{name}.0.log")
            replica.start()
            stack.replicas[name] = [replica]
        for replicas in stack.replicas.values():
            replicas[0].wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack
