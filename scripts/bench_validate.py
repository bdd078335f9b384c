"""Measure token validation: cache hits, cache misses, and delete-to-rejection.

Run with ``make bench-validate``. It starts the local servers that are not
running and the four services on free ports of 127.0.0.1, with a fresh
database, and stops what it started. Every figure is a ratio against a
ceiling measured in the same run, on the same machine:

- forward auth on a cache hit, in requests per second, divided by the same
  server's bare ``/healthz``;
- forward auth on a cache miss (a tokens process with the cache off) divided
  by a bare asyncpg loop that runs the same statement with the same
  number of connections and concurrent callers;
- the time from a deletion through one tokens process to the first 401 from
  another, which learns of it only from the event: p50 and p99.

Every loop is bounded in count and in time, and every request goes to a
server this script started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from infra import cli as infra_cli
from infra.config import load
from services.client import Api
from services.launcher import SERVICES, free_port, start_stack
from services.provision import drop, provision
from services.tokens import secret
from services.tokens.config import TokensConfig
from services.tokens.service import LOOKUP_SQL

ADMIN_PASSWORD = "admin-dev-only-password"
LABELS = {
    "healthz": "bare /healthz",
    "hit": "forward auth, cache hit",
    "miss": "forward auth, cache off",
    "asyncpg": "bare asyncpg loop of the same statement",
}
HOST = "127.0.0.1"
MAX_REQUESTS = 200_000


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float
    failures: int

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


async def _keep_alive_client(
    port: int,
    request: bytes,
    expected: int,
    deadline: float,
    budget: list[int],
    tally: list[int],
) -> None:
    """Send ``request`` over one HTTP/1.1 connection until time or budget ends."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            writer.write(request)
            # One read for the whole head keeps the client's cost per request
            # low, so that the server is what the figures measure.
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            start = head.index(b"content-length:") + len(b"content-length:")
            length = int(head[start : head.index(b"\r\n", start)])
            await reader.readexactly(length)
            status = int(head[9:12])
            tally[0 if status == expected else 1] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def http_rate(
    port: int,
    path: str,
    headers: dict[str, str],
    expected: int,
    seconds: float,
    connections: int,
) -> Rate:
    """Return the request rate of ``connections`` keep-alive clients."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    budget = [MAX_REQUESTS]
    tally = [0, 0]
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(
        *(
            _keep_alive_client(port, request, expected, deadline, budget, tally)
            for _ in range(connections)
        )
    )
    return Rate(tally[0], time.monotonic() - start, tally[1])


async def query_rate(
    dsn: str, hashes: list[bytes], seconds: float, connections: int, callers: int
) -> Rate:
    """Return the rate of a bare loop of the statement of a cache miss."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=connections,
        max_size=connections,
        server_settings={"search_path": "tokens", "timezone": "UTC"},
    )
    budget = [MAX_REQUESTS]
    done = [0]
    start = time.monotonic()
    deadline = start + seconds

    async def caller() -> None:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            row = await pool.fetchrow(LOOKUP_SQL, hashes)
            assert row is not None
            done[0] += 1

    try:
        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        await pool.close()
    return Rate(done[0], time.monotonic() - start, 0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def delete_to_rejection(
    api: Api,
    session: str,
    deleting_url: str,
    checking_url: str,
    count: int,
    timeout: float,
) -> list[float]:
    """Return, per token, the seconds from a deletion's 204 to the first 401.

    The token is deleted through ``deleting_url`` after ``checking_url`` has
    cached it as valid, so only the event can make ``checking_url`` reject it.
    """
    delays: list[float] = []
    with httpx.Client(timeout=5.0) as client:
        for number in range(count):
            token = api.create_token(session, f"bench delete {number}", 5)
            headers = {"Authorization": f"Bearer {token['token']}"}
            forward = f"{checking_url}/v1/auth/forward"
            for _ in range(3):
                client.get(forward, headers=headers).raise_for_status()
            deleted = client.delete(
                f"{deleting_url}/v1/tokens/{token['id']}",
                headers={"Authorization": f"Bearer {session}"},
            )
            deleted.raise_for_status()
            start = time.monotonic()
            while time.monotonic() - start < timeout:
                if client.get(forward, headers=headers).status_code == 401:
                    delays.append(time.monotonic() - start)
                    break
            else:
                raise TimeoutError(f"token {number} was still valid after {timeout} s")
    return delays


def _measure(factory: Callable[[], Coroutine[Any, Any, Rate]]) -> Rate:
    return asyncio.run(factory())


def run(seconds: float, rounds: int, connections: int, deletions: int) -> None:
    config = load()
    results: dict[str, list[Rate]] = {name: [] for name in LABELS}
    already_up = {r.name for r in infra_cli.status(config=config, echo=False) if r.ok}
    infra_cli.up(config=config, echo=False)
    database = f"pat_bench_{uuid.uuid4().hex[:8]}"
    dsns = asyncio.run(provision(config.pg_dsn, database))
    ports = {name: free_port() for name in SERVICES}
    stack = start_stack(
        dsns,
        config.kafka_bootstrap,
        config.smtp_port,
        config.run_dir / "bench-logs" / database,
        topic_prefix=f"bench-{database}.",
        ports=ports,
        extra_env={
            "PAT_ENVIRONMENT": "development",
            "PAT_SCAN_INTERVAL_SECONDS": "3600",
            "PAT_OUTBOX_POLL_SECONDS": "0.5",
            "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PAT_VALIDATION_CACHE_SECONDS": "300",
            "PAT_LOG_LEVEL": "WARNING",
        },
    )
    api = Api(stack.urls)
    try:
        nocache_port = free_port()
        stack.start_replica(
            "tokens",
            "tokens-nocache",
            nocache_port,
            extra_env={"PAT_VALIDATION_CACHE_SECONDS": "0"},
        )
        checking_url = stack.start_replica("tokens", "tokens-second", free_port())
        admin = api.sign_in("admin", ADMIN_PASSWORD)
        api.change_setting(admin, "pat_enabled", True)
        api.wait_for_feature(admin, enabled=True)
        name = f"bench{uuid.uuid4().hex[:8]}"
        user = api.create_user(
            admin,
            username=name,
            display_name="Bench",
            email=f"{name}@bench.example.org",
            password="bench-dev-only-password",
            role="user",
            time_zone="UTC",
        )
        api.wait_for_user(admin, user["id"])
        session = api.sign_in(name, "bench-dev-only-password")
        token = api.create_token(session, "bench", 5)
        auth = {"Authorization": f"Bearer {token['token']}"}
        _wait_for_cache(checking_url)
        tokens_port = ports["tokens"]

        # The services run with the development default key.
        default_key = TokensConfig(environment="development").hash_key
        key = secret.keyed_hash(default_key.get_secret_value().encode(), token["token"])

        def rate(port: int, path: str, headers: dict[str, str]) -> Rate:
            return _measure(
                lambda: http_rate(port, path, headers, 200, seconds, connections)
            )

        rate(tokens_port, "/v1/auth/forward", auth)  # warm-up, not reported
        # Rounds interleave the four loops, so that a change in the machine's
        # load affects a ratio's two sides alike.
        for _ in range(rounds):
            results["healthz"].append(rate(tokens_port, "/healthz", {}))
            results["hit"].append(rate(tokens_port, "/v1/auth/forward", auth))
            results["miss"].append(rate(nocache_port, "/v1/auth/forward", auth))
            results["asyncpg"].append(
                _measure(
                    lambda: query_rate(dsns["tokens"], [key], seconds, 10, connections)
                )
            )
        cache = httpx.get(f"{stack.urls['tokens']}/v1/dev/validation-cache").json()
        delays = delete_to_rejection(
            api, session, stack.urls["tokens"], checking_url, deletions, 10.0
        )
    finally:
        api.close()
        stack.stop()
        asyncio.run(drop(config.pg_dsn, database))
        started = [n for n in ("smtp", "kafka", "postgres") if n not in already_up]
        if started:
            infra_cli.down(started, config=config, echo=False)

    print(
        f"{rounds} rounds of {seconds} s per loop, {connections} keep-alive "
        "connections or asyncpg callers (10 asyncpg connections)"
    )
    for name, label in LABELS.items():
        median = statistics.median(r.per_second for r in results[name])
        print(f"{label:<38} {median:9.0f} per second (median)")
    for top, bottom in (("hit", "healthz"), ("miss", "asyncpg")):
        ratios = [
            a.per_second / b.per_second
            for a, b in zip(results[top], results[bottom], strict=True)
        ]
        print(
            f"  {top} / {bottom}: median {statistics.median(ratios):.2f}, "
            f"rounds {', '.join(f'{r:.2f}' for r in ratios)}"
        )
    # A miss costs an HTTP request and a query in one process, so its ceiling
    # is the two bare loops in series, not the query loop alone.
    series = [
        a.per_second / (1 / (1 / h.per_second + 1 / q.per_second))
        for a, h, q in zip(
            results["miss"], results["healthz"], results["asyncpg"], strict=True
        )
    ]
    print(
        f"  miss / (healthz and asyncpg in series): median "
        f"{statistics.median(series):.2f}"
    )
    print(
        f"validation cache of the hit server: {cache['hits']} hits, "
        f"{cache['misses']} misses"
    )
    print(f"delete to first 401 on another process, {len(delays)} deletions:")
    print(f"  p50: {percentile(delays, 0.50) * 1000:7.1f} ms")
    print(f"  p99: {percentile(delays, 0.99) * 1000:7.1f} ms")
    print(f"  max: {max(delays) * 1000:7.1f} ms")
    failures = sum(r.failures for rates in results.values() for r in rates)
    print(f"unexpected statuses: {failures}")


def _wait_for_cache(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/dev/validation-cache").json()["enabled"]:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the validation cache of {url} was not enabled in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="duration of each rate measurement"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the four rate measurements"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="concurrent keep-alive clients"
    )
    parser.add_argument(
        "--deletions", type=int, default=40, help="tokens deleted for the latency"
    )
    arguments = parser.parse_args()
    if not 0 < arguments.seconds <= 60:
        parser.error("--seconds must be greater than 0 and at most 60")
    if not 0 < arguments.deletions <= 500:
        parser.error("--deletions must be from 1 to 500")
    if not 0 < arguments.connections <= 256:
        parser.error("--connections must be from 1 to 256")
    if not 0 < arguments.rounds <= 20:
        parser.error("--rounds must be from 1 to 20")
    run(arguments.seconds, arguments.rounds, arguments.connections, arguments.deletions)


if __name__ == "__main__":
    main()
