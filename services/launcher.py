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
class Stack:
    """The running services, their base URLs and their log files."""

    urls: dict[str, str]
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    environments: dict[str, dict[str, str]] = field(default_factory=dict)

    def start_replica(
        self,
        name: str,
        replica: str,
        port: int,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        """Start one more process of service ``name`` on ``port``; return its URL.

        The replica shares the database, topics and configuration of the first
        process, except for ``extra_env``, and is stopped with the stack.
        """
        url = f"http://127.0.0.1:{port}"
        env = {
            **self.environments[name],
            **(extra_env or {}),
            "PAT_HTTP_PORT": str(port),
        }
        self.logs[replica] = self.logs[name].with_name(f"{replica}.log")
        self.processes[replica] = _launch(name, env, self.logs[replica])
        _wait_ready(replica, url, self)
        return url

    def stop_process(self, name: str) -> None:
        """Stop one process of the stack, such as a replica."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


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
    stack = Stack(urls=urls, logs={n: log_dir / f"{n}.log" for n in SERVICES})
    common = {
        "PAT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PAT_TOPIC_PREFIX": topic_prefix,
        "PAT_PROFILE_URL": urls["profile"],
        "PAT_TOKENS_URL": urls["tokens"],
        "PAT_SMTP_PORT": str(smtp_port),
        **(extra_env or {}),
    }
    try:
        for name in SERVICES:
            env = {
                **os.environ,
                **common,
                "PAT_DATABASE_URL": dsns[name],
                "PAT_HTTP_PORT": str(ports[name]),
            }
            stack.environments[name] = env
            stack.processes[name] = _launch(name, env, stack.logs[name])
        for name in SERVICES:
            _wait_ready(name, urls[name], stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def _launch(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(name: str, url: str, stack: Stack) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        process = stack.processes[name]
        if process.poll() is not None:
            tail = stack.logs[name].read_text(errors="replace")[-3000:]
            message = f"{name} exited with {process.returncode} on start:\n{tail}"
            raise RuntimeError(message)
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    message = f"{name} did not become ready within {START_TIMEOUT_SECONDS:.0f} s"
    raise TimeoutError(message)
