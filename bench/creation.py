"""Token creation through the API, against the same transaction run bare.

The figure is ``POST /v1/tokens`` requests per second, each of which checks
the caller's session with the profile service, reads the settings and
stores the token with its ``TokenCreated`` outbox row. The ceiling runs the
service's own transaction (``insert_token`` in services/tokens/service.py)
in a bare asyncpg loop, on copies of the tokens and outbox tables that hold
the same rows. Both sides use the same number of concurrent callers, the
same pool size and the same (user, token name) pairs, so what the ratio
measures is everything the API adds around that transaction.

Rounds alternate the API and the ceiling because the machine is shared and
its load changes between measurements. Before each round, the bench users'
tokens are deleted with SQL so that each round has the full quota of 50
active tokens per user.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.common import (
    BenchStack,
    Load,
    Row,
    Section,
    http_load,
    http_request,
    latency_line,
    pinned,
    wait_for_outbox,
)
from services.common.db import create_pool
from services.contracts import Topics
from services.tokens import secret
from services.tokens.service import NewToken, insert_token

# Concurrent HTTP connections, and concurrent callers of the bare loop.
CONNECTIONS = 16
# The tokens service's pool size, the default of create_pool.
POOL_SIZE = 10
# The default PAT_MAX_ACTIVE_TOKENS; each round creates this many per user.
TOKENS_PER_USER = 50
CEILING_SCHEMA = "bench_ceiling"
TARGET = 0.4


@dataclass(frozen=True)
class Sizes:
    users: int
    rounds: int
    seconds: float
    # Tokens of other users in the table, for the first measurement; the
    # second has ten times as many.
    existing_tokens: int


QUICK = Sizes(users=16, rounds=2, seconds=1.5, existing_tokens=10_000)
FULL = Sizes(users=40, rounds=3, seconds=4.0, existing_tokens=100_000)


@dataclass
class Measurement:
    existing_tokens: int
    api_rates: list[float] = field(default_factory=list)
    ceiling_rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def api(self) -> float:
        return statistics.median(self.api_rates)

    @property
    def ceiling(self) -> float:
        return statistics.median(self.ceiling_rates)


def creation_requests(
    port: int, sessions: list[tuple[str, str]]
) -> tuple[list[bytes], list[tuple[uuid.UUID, str]]]:
    """Return one request per (user, token name), users interleaved, and the
    same pairs for the ceiling."""
    requests: list[bytes] = []
    pairs: list[tuple[uuid.UUID, str]] = []
    for index in range(TOKENS_PER_USER):
        name = f"bench {index}"
        body = json.dumps({"name": name, "expire_in_days": 30}).encode()
        for user_id, session in sessions:
            headers = {
                "Authorization": f"Bearer {session}",
                "Content-Type": "application/json",
            }
            requests.append(http_request(port, "POST", "/v1/tokens", headers, body))
            pairs.append((uuid.UUID(user_id), name))
    return requests, pairs


async def create_ceiling_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE SCHEMA {CEILING_SCHEMA};"
            f" CREATE TABLE {CEILING_SCHEMA}.tokens (LIKE tokens.tokens INCLUDING ALL);"
            f" CREATE TABLE {CEILING_SCHEMA}.outbox (LIKE tokens.outbox INCLUDING ALL);"
            # LIKE copies the default of id, which draws from the service's
            # sequence; the copy gets its own.
            f" CREATE SEQUENCE {CEILING_SCHEMA}.outbox_id_seq;"
            f" ALTER TABLE {CEILING_SCHEMA}.outbox ALTER COLUMN id"
            f" SET DEFAULT nextval('{CEILING_SCHEMA}.outbox_id_seq')"
        )
    finally:
        await conn.close()


async def seed_existing(dsn: str, total: int) -> None:
    """Fill both token tables up to ``total`` tokens of other users."""
    conn = await asyncpg.connect(dsn)
    try:
        seeded = await conn.fetchval(
            "SELECT count(*) FROM tokens.tokens WHERE name LIKE 'seed %'"
        )
        await conn.execute(
            "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
            " created_at, expires_at)"
            " SELECT gen_random_uuid(), gen_random_uuid(), 'seed ' || n,"
            " sha256(n::text::bytea), 'k1', now() - interval '1 day',"
            " now() + interval '90 days'"
            " FROM generate_series($1 + 1, $2) AS n",
            seeded,
            total,
        )
        await conn.execute(f"TRUNCATE {CEILING_SCHEMA}.tokens")
        await conn.execute(
            f"INSERT INTO {CEILING_SCHEMA}.tokens SELECT * FROM tokens.tokens"
        )
        await conn.execute("ANALYZE tokens.tokens")
        await conn.execute(f"ANALYZE {CEILING_SCHEMA}.tokens")
    finally:
        await conn.close()


async def delete_bench_tokens(dsn: str, user_ids: list[uuid.UUID]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("tokens.tokens", f"{CEILING_SCHEMA}.tokens"):
            await conn.execute(
                f"UPDATE {table} SET revoked_at = now()"
                " WHERE user_id = ANY($1) AND revoked_at IS NULL",
                user_ids,
            )
    finally:
        await conn.close()


async def bare_creations(
    dsn: str,
    topic: str,
    pairs: list[tuple[uuid.UUID, str]],
    seconds: float,
) -> Load:
    """Run the service's creation transaction over ``pairs`` with
    ``CONNECTIONS`` callers sharing a pool of ``POOL_SIZE``."""
    key = b"bench-ceiling-dev-only-key"
    # The service's own pool settings, on the copies of its tables.
    pool = await create_pool(dsn, CEILING_SCHEMA, max_size=POOL_SIZE)
    load = Load(0, 0.0, 0, [])

    async def caller(deadline: float) -> None:
        while time.monotonic() < deadline and load.sent < len(pairs):
            user_id, name = pairs[load.sent]
            load.sent += 1
            value = secret.generate()
            now = datetime.now(UTC)
            new = NewToken(
                id=uuid.uuid4(),
                user_id=user_id,
                name=name,
                hash=secret.keyed_hash(key, value),
                hash_key_id="k1",
                created_at=now,
                expires_at=now + timedelta(days=30),
            )
            async with pool.acquire() as conn, conn.transaction():
                await insert_token(conn, CEILING_SCHEMA, topic, new, TOKENS_PER_USER)
            load.count += 1

    try:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(caller(deadline) for _ in range(CONNECTIONS)))
        load.seconds = time.monotonic() - started
    finally:
        await pool.close()
    return load


async def measure(
    bench: BenchStack, sessions: list[tuple[str, str]], sizes: Sizes, existing: int
) -> Measurement:
    dsn = bench.superuser_dsn
    port = bench.stack.replicas["tokens"][0].port
    topic = Topics(f"bench-{bench.database}.").tokens_events
    requests, pairs = creation_requests(port, sessions)
    user_ids = [uuid.UUID(user_id) for user_id, _ in sessions]
    result = Measurement(existing)
    await seed_existing(dsn, existing)
    for _ in range(sizes.rounds):
        await delete_bench_tokens(dsn, user_ids)
        await wait_for_outbox(dsn, "tokens")
        load = await http_load(
            port, requests, 201, sizes.seconds, CONNECTIONS, len(requests)
        )
        result.api_rates.append(load.per_second)
        result.latencies += load.latencies
        result.failures += load.failures
        # The relay publishes the round's events after the round; the
        # ceiling should not run beside it.
        published, drain_seconds = await wait_for_outbox(dsn, "tokens")
        if published:
            result.notes.append(
                f"relay published {published} TokenCreated events in "
                f"{drain_seconds:.1f} s after the round"
            )
        ceiling = await bare_creations(dsn, topic, pairs, sizes.seconds)
        result.ceiling_rates.append(ceiling.per_second)
    return result


def run(quick: bool) -> Section:
    sizes = QUICK if quick else FULL
    with BenchStack() as bench:
        admin = bench.admin_session()
        sessions = bench.create_users(admin, sizes.users)
        asyncio.run(create_ceiling_tables(bench.superuser_dsn))
        placement = Section()
        servers = [
            replica.process.pid
            for name in ("tokens", "profile")
            for replica in bench.stack.replicas[name]
            if replica.process is not None
        ]
        with pinned(servers, placement, "tokens and profile processes"):
            first = asyncio.run(measure(bench, sessions, sizes, sizes.existing_tokens))
            grown = asyncio.run(
                measure(bench, sessions, sizes, sizes.existing_tokens * 10)
            )
        memory = bench.peak_memory()

    row = Row(
        path="token creation, with outbox",
        figure=f"requests per second, {CONNECTIONS} connections",
        value=first.api,
        ceiling="the same transaction, bare asyncpg loop",
        ceiling_value=first.ceiling,
        target=TARGET,
    )
    details = [
        *placement.details,
        latency_line("token creation (POST /v1/tokens)", first.latencies),
        "token creation rounds, API / ceiling per second: "
        + ", ".join(
            f"{api:,.0f} / {ceiling:,.0f}"
            for api, ceiling in zip(first.api_rates, first.ceiling_rates, strict=True)
        ),
    ]
    if first.failures or grown.failures:
        details.append(
            f"token creation: {first.failures + grown.failures} responses "
            "other than 201"
        )
    details += first.notes[-1:]
    growth = [
        f"token creation, {sizes.users} users, other users' tokens in the table "
        f"{first.existing_tokens:,} → {grown.existing_tokens:,}: "
        f"{first.api:,.0f} → {grown.api:,.0f} per second "
        f"(ratio {first.api / first.ceiling:.2f} → {grown.api / grown.ceiling:.2f})"
    ]
    return Section(rows=[row], details=details, growth=growth, memory=memory)
