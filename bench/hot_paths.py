"""Measure token creation, email sending and the expiry scan against ceilings.

Run with ``make bench`` (after the validation benchmark). It starts the local
servers that are not running and the four services on free ports of
127.0.0.1 with a fresh database, and stops what it started. Every figure is
a ratio against a ceiling measured in the same run on the same machine:

- token creation through the API (with its outbox row), in requests per
  second, divided by a bare asyncpg loop of the same insert;
- the notifier's sending, in emails per second to the local SMTP sink,
  divided by a bare aiosmtplib loop on one persistent connection;
- the expiry scan, in tokens per second over a table of which a tenth is
  due, divided by a bare keyset scan of the same index.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import httpx

from infra import cli as infra_cli
from infra.config import InfraConfig, load
from services.client import Api
from services.launcher import SERVICES, Stack, free_port, start_stack
from services.provision import drop, provision

ADMIN_PASSWORD = "admin-dev-only-password"
PASSWORD = "bench-dev-only-password"
TOKENS_PER_USER = 45  # under the default limit of 50 active tokens
DEADLINE_SECONDS = 300.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def create_tokens(api_url: str, sessions: list[str], count: int) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for index in range(count):
            session = sessions[index // TOKENS_PER_USER]
            started = time.perf_counter()
            response = await client.post(
                f"{api_url}/v1/tokens",
                json={"name": f"bench {index}", "expire_in_days": 30},
                headers={"Authorization": f"Bearer {session}"},
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


async def bare_inserts(dsn: str, count: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE bench_tokens (LIKE tokens.tokens INCLUDING ALL)"
        )
        now = datetime.now(UTC)
        started = time.perf_counter()
        for index in range(count):
            await conn.execute(
                "INSERT INTO bench_tokens (id, user_id, name, hash, hash_key_id,"
                " created_at, expires_at) VALUES ($1, $2, $3, $4, 'k1', $5, $6)",
                uuid.uuid4(),
                uuid.uuid4(),
                f"bench {index}",
                uuid.uuid4().bytes * 2,
                now,
                now + timedelta(days=30),
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def notifier_sending(dsn: str, count: int) -> float:
    """Insert ``count`` due email requests; return seconds until all are sent."""
    conn = await asyncpg.connect(dsn)
    try:
        user_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO notifier.users (user_id, email, display_name, time_zone)"
            " VALUES ($1, 'bench@example.org', 'Bench', 'UTC')",
            user_id,
        )
        started = time.perf_counter()
        await conn.executemany(
            "INSERT INTO notifier.email_requests (dedupe_key, kind, user_id,"
            " token_id, token_name, expires_at, message_id)"
            " VALUES ($1, 'token-expired', $2, $3, 'bench', now(), $4)",
            [
                (f"bench.{i}.{user_id}", user_id, uuid.uuid4(), f"<bench.{i}@bench>")
                for i in range(count)
            ],
        )
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            pending = await conn.fetchval(
                "SELECT count(*) FROM notifier.email_requests"
                " WHERE user_id = $1 AND status <> 'sent'",
                user_id,
            )
            if pending == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"timed out after {DEADLINE_SECONDS:.0f} s waiting for the notifier"
        )
    finally:
        await conn.close()


async def bare_smtp(config: InfraConfig, count: int) -> float:
    client = aiosmtplib.SMTP(hostname=config.smtp_host, port=config.smtp_port)
    await client.connect()
    try:
        started = time.perf_counter()
        for index in range(count):
            message = EmailMessage()
            message["From"] = "bench@example.org"
            message["To"] = "bench@example.org"
            message["Subject"] = f"bench {index}"
            message.set_content("A bare send, for the ceiling.")
            await client.send_message(message)
        return time.perf_counter() - started
    finally:
        await client.quit()


async def seed_scan(dsn: str, total: int) -> None:
    """Fill the tokens table: a tenth of ``total`` expired, the rest far off."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
            " created_at, expires_at)"
            " SELECT gen_random_uuid(), gen_random_uuid(), 'seed ' || n,"
            " sha256(n::text::bytea), 'k1', now() - interval '40 days',"
            " CASE WHEN n % 10 = 0 THEN now() - interval '1 hour'"
            " ELSE now() + interval '90 days' END"
            " FROM generate_series(1, $1) AS n",
            total,
        )
        await conn.execute("ANALYZE tokens.tokens")
    finally:
        await conn.close()


async def bare_keyset_scan(dsn: str, batch: int) -> tuple[int, float]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        seen = 0
        last = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
        while True:
            rows = await conn.fetch(
                "SELECT id, expires_at FROM tokens.tokens"
                " WHERE expired_event_at IS NULL AND revoked_at IS NULL"
                " AND expires_at <= now() AND (expires_at, id) > ($1, $2)"
                " ORDER BY expires_at, id LIMIT $3",
                *last,
                batch,
            )
            if not rows:
                return seen, time.perf_counter() - started
            seen += len(rows)
            last = (rows[-1]["expires_at"], rows[-1]["id"])
    finally:
        await conn.close()


def run(count: int, scan_total: int) -> None:
    config = load()
    already_up = {r.name for r in infra_cli.status(config=config, echo=False) if r.ok}
    infra_cli.up(config=config, echo=False)
    database = f"pat_bench_{uuid.uuid4().hex[:8]}"
    dsns = asyncio.run(provision(config.pg_dsn, database))
    superuser = config.pg_dsn_for(database)
    stack: Stack | None = None
    try:
        stack = start_stack(
            dsns,
            config.kafka_bootstrap,
            config.smtp_port,
            config.run_dir / "bench-logs" / database,
            topic_prefix=f"bench-{database}.",
            ports={name: free_port() for name in SERVICES},
            extra_env={
                "PAT_ENVIRONMENT": "development",
                "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "PAT_LOG_LEVEL": "WARNING",
                "PAT_SEND_POLL_SECONDS": "0.05",
                "PAT_SCAN_INTERVAL_SECONDS": "3600",
            },
        )
        report(stack, config, superuser, count, scan_total)
    finally:
        if stack is not None:
            stack.stop()
        asyncio.run(drop(config.pg_dsn, database))
        started = [n for n in ("smtp", "kafka", "postgres") if n not in already_up]
        if started:
            infra_cli.down(started, config=config, echo=False)


def report(
    stack: Stack, config: InfraConfig, superuser: str, count: int, scan_total: int
) -> None:
    api = Api(stack.urls)
    admin = api.sign_in("admin", ADMIN_PASSWORD)
    api.change_setting(admin, "pat_enabled", True)
    api.wait_for_feature(admin, enabled=True)
    sessions = []
    for index in range(-(-count // TOKENS_PER_USER)):
        name = f"bench{index}{uuid.uuid4().hex[:6]}"
        user = api.create_user(
            admin,
            username=name,
            display_name="Bench",
            email=f"{name}@bench.example.org",
            password=PASSWORD,
        )
        api.wait_for_user(admin, user["id"])
        sessions.append(api.sign_in(name, PASSWORD))

    latencies = asyncio.run(create_tokens(stack.urls["tokens"], sessions, count))
    creation = count / sum(latencies)
    insert = count / asyncio.run(bare_inserts(superuser, count))
    sending = count / asyncio.run(notifier_sending(superuser, count))
    smtp = count / asyncio.run(bare_smtp(config, count))
    asyncio.run(seed_scan(superuser, scan_total))
    due, keyset_seconds = asyncio.run(bare_keyset_scan(superuser, 500))
    started = time.perf_counter()
    scanned = api.request("POST", "tokens", "/v1/dev/expiry-scan", timeout=600)
    scan_seconds = time.perf_counter() - started

    rows = [
        ("token creation, with outbox", creation, "bare asyncpg insert", insert, 0.4),
        ("notifier sending to the sink", sending, "bare aiosmtplib loop", smtp, 0.8),
        (
            f"expiry scan, {scan_total} tokens, {due} due",
            scanned["expired"] / scan_seconds,
            "bare keyset scan",
            due / keyset_seconds,
            0.25,
        ),
    ]
    print("| path | per second | ceiling | per second | ratio | target |")
    print("|---|---|---|---|---|---|")
    for path, value, ceiling, ceiling_value, target in rows:
        ratio = value / ceiling_value
        print(
            f"| {path} | {value:,.0f} | {ceiling} | {ceiling_value:,.0f} "
            f"| {ratio:.2f} | {'≥'} {target} |"
        )
    print(
        f"\ntoken creation latency: p50 {statistics.median(latencies) * 1000:.1f} ms,"
        f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms ({count} requests)"
    )
    api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count",
        type=int,
        default=300,
        help="number of token creations, and of emails",
    )
    parser.add_argument(
        "--scan-tokens",
        type=int,
        default=100_000,
        help="number of tokens in the scan table, a tenth of them due",
    )
    args = parser.parse_args()
    run(args.count, args.scan_tokens)


if __name__ == "__main__":
    main()
