"""Shared benchmark parts: the stack under test, the HTTP load loop and the
table row.

Every server here is one this process started on 127.0.0.1, and every loop
is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
import uvloop

from infra import cli as infra_cli
from infra.config import InfraConfig, load
from services.client import Api
from services.launcher import SERVICES, Stack, free_port, start_stack
from services.provision import drop, provision

HOST = "127.0.0.1"
ADMIN_PASSWORD = "admin-dev-only-password"
PASSWORD = "bench-dev-only-password"
MAX_REQUESTS = 200_000
REQUEST_TIMEOUT_SECONDS = 10.0
OUTBOX_DRAIN_SECONDS = 300.0

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its ceiling and the target ratio.

    ``at_most`` marks a figure where smaller is better (a latency), so the
    ratio must be at most ``target`` instead of at least.
    """

    path: str
    figure: str
    value: float
    ceiling: str
    ceiling_value: float
    target: float
    at_most: bool = False

    @property
    def ratio(self) -> float:
        return self.value / self.ceiling_value if self.ceiling_value else 0.0

    @property
    def met(self) -> bool:
        if not self.ceiling_value:
            return False
        if self.at_most:
            return self.ratio <= self.target
        return self.ratio >= self.target


@dataclass
class Section:
    """The rows, detail lines, growth lines and memory of one benchmark module."""

    rows: list[Row] = field(default_factory=list)
    # p50 and p99 of HTTP figures, and anything else worth a line.
    details: list[str] = field(default_factory=list)
    # How a figure changes when its input grows tenfold.
    growth: list[str] = field(default_factory=list)
    # Peak resident memory in KiB, by process label.
    memory: dict[str, int] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def latency_line(label: str, seconds: list[float]) -> str:
    return (
        f"{label}: p50 {percentile(seconds, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:.1f} ms ({len(seconds)} requests)"
    )


def run_on_uvloop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on uvloop, the event loop that the services use."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def peak_memory_kib(pid: int) -> int | None:
    """Return the peak resident set of a running process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


async def wait_for_outbox(
    dsn: str, schema: str, max_seconds: float = OUTBOX_DRAIN_SECONDS
) -> tuple[int, float]:
    """Wait until the relay of ``schema`` has published every outbox row.

    Returns how many rows were unpublished at the start and how many seconds
    the relay took; raises ``TimeoutError`` after ``max_seconds``.
    """
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        first: int | None = None
        while True:
            pending: int = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
            )
            first = pending if first is None else first
            if pending == 0:
                return first, time.monotonic() - started
            if time.monotonic() - started > max_seconds:
                raise TimeoutError(
                    f"the {schema} outbox still had {pending} unpublished rows "
                    f"after {max_seconds:.0f} s"
                )
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


class BenchStack:
    """The four services on free ports of 127.0.0.1, with a fresh database.

    Starts the local servers (Kafka, Postgres, SMTP sink) that are not
    running, and on exit stops what it started and drops the database.
    """

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.config: InfraConfig = load()
        self.database = f"pat_bench_{uuid.uuid4().hex[:8]}"
        self.extra_env = {
            "PAT_ENVIRONMENT": "development",
            "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PAT_LOG_LEVEL": "WARNING",
            "PAT_SCAN_INTERVAL_SECONDS": "3600",
            **(extra_env or {}),
        }
        self._already_up: set[str] = set()
        self._stack: Stack | None = None
        self._api: Api | None = None
        self.dsns: dict[str, str] = {}

    @property
    def stack(self) -> Stack:
        assert self._stack is not None, "the stack is not running"
        return self._stack

    @property
    def api(self) -> Api:
        assert self._api is not None, "the stack is not running"
        return self._api

    @property
    def superuser_dsn(self) -> str:
        return self.config.pg_dsn_for(self.database)

    @property
    def log_dir(self) -> Path:
        return self.config.run_dir / "bench-logs" / self.database

    def __enter__(self) -> BenchStack:
        statuses = infra_cli.status(config=self.config, echo=False)
        self._already_up = {r.name for r in statuses if r.ok}
        infra_cli.up(config=self.config, echo=False)
        try:
            self.dsns = asyncio.run(provision(self.config.pg_dsn, self.database))
            self._stack = start_stack(
                self.dsns,
                self.config.kafka_bootstrap,
                self.config.smtp_port,
                self.log_dir,
                topic_prefix=f"bench-{self.database}.",
                ports={name: free_port() for name in SERVICES},
                extra_env=self.extra_env,
            )
            self._api = Api(self._stack.urls)
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._teardown()

    def _teardown(self) -> None:
        if self._api is not None:
            self._api.close()
        if self._stack is not None:
            self._stack.stop()
        if self.dsns:
            asyncio.run(drop(self.config.pg_dsn, self.database))
        started = [
            n for n in ("smtp", "kafka", "postgres") if n not in self._already_up
        ]
        if started:
            infra_cli.down(started, config=self.config, echo=False)

    def peak_memory(self) -> dict[str, int]:
        """Return each running service process's peak resident set, in KiB."""
        peaks: dict[str, int] = {}
        for name, replicas in self.stack.replicas.items():
            for index, replica in enumerate(replicas):
                if replica.process is None:
                    continue
                peak = peak_memory_kib(replica.process.pid)
                if peak is not None:
                    peaks[f"{name}.{index}"] = peak
        return peaks

    def admin_session(self, enable_feature: bool = True) -> str:
        admin = self.api.sign_in("admin", ADMIN_PASSWORD)
        if enable_feature:
            self.api.change_setting(admin, "pat_enabled", True)
            self.api.wait_for_feature(admin, enabled=True)
        return admin

    def create_users(self, admin: str, count: int) -> list[tuple[str, str]]:
        """Create ``count`` users; return (user id, session) for each."""
        users = []
        for _ in range(count):
            name = f"bench{uuid.uuid4().hex[:10]}"
            user = self.api.create_user(
                admin,
                username=name,
                display_name="Bench",
                email=f"{name}@bench.example.org",
                password=PASSWORD,
                role="user",
                time_zone="UTC",
            )
            users.append((user["id"], name))
        sessions = []
        for user_id, name in users:
            self.api.wait_for_user(admin, user_id)
            sessions.append((user_id, self.api.sign_in(name, PASSWORD)))
        return sessions


@dataclass
class Load:
    """The outcome of a keep-alive HTTP load loop."""

    count: int
    seconds: float
    failures: int
    latencies: list[float]
    # Requests written so far, which is also the index of the next one.
    sent: int = 0

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def http_request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """Encode one HTTP/1.1 request; a ``body`` gets its Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _keep_alive_client(
    port: int,
    requests: list[bytes],
    expected: int,
    deadline: float,
    budget: list[int],
    load: Load,
) -> None:
    """Send requests over one HTTP/1.1 connection until time or budget ends.

    Every client takes the next request of the shared list in turn, so that
    a loop can spread over many tokens, and each request goes out once
    before any goes out again.
    """
    reader, writer = await asyncio.open_connection(HOST, port)
    # If a server stops responding, the loop times out at this point.
    limit = max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT_SECONDS
    try:
        async with asyncio.timeout(limit):
            await _exchange(reader, writer, requests, expected, deadline, budget, load)
    finally:
        writer.close()
        await writer.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    requests: list[bytes],
    expected: int,
    deadline: float,
    budget: list[int],
    load: Load,
) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        turn = load.sent
        load.sent += 1
        started = time.perf_counter()
        writer.write(requests[turn % len(requests)])
        # One read for the whole head keeps the client's cost per request
        # low, so that the server is what the figures measure.
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        start = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[start : head.index(b"\r\n", start)])
        await reader.readexactly(length)
        load.latencies.append(time.perf_counter() - started)
        if int(head[9:12]) == expected:
            load.count += 1
        else:
            load.failures += 1


async def http_load(
    port: int,
    requests: list[bytes],
    expected: int,
    seconds: float,
    connections: int,
    max_requests: int = MAX_REQUESTS,
) -> Load:
    """Run ``connections`` keep-alive clients for ``seconds``, at most
    ``max_requests`` requests in all; every status but ``expected`` counts as
    a failure."""
    budget = [max_requests]
    load = Load(0, 0.0, 0, [])
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(
        *(
            _keep_alive_client(port, requests, expected, deadline, budget, load)
            for _ in range(connections)
        )
    )
    load.seconds = time.monotonic() - start
    return load


@contextmanager
def pinned(server_pids: list[int], section: Section, servers: str) -> Iterator[None]:
    """Run the servers under test on the last core and this process on the others.

    Processes started inside inherit this process's cores, so the background
    load generators stay off the servers' core too.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        section.details.append("one core only: load generator and servers share it")
        yield
        return
    server_core, load_cores = {cores[-1]}, set(cores[:-1])
    # The servers keep this core until the stack stops them.
    for pid in server_pids:
        os.sched_setaffinity(pid, server_core)
    os.sched_setaffinity(0, load_cores)
    section.details.append(
        f"{servers} on core {cores[-1]}, load generators on cores "
        f"{', '.join(map(str, sorted(load_cores)))}"
    )
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cores))
