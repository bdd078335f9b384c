"""The expiry scan, against a bare keyset scan of the same index.

The tokens table is filled with one ``INSERT ... SELECT generate_series``:
a tenth of the tokens expired an hour ago and the rest expire in 90 days.
The figure is expired tokens per second of one ``POST /v1/dev/expiry-scan``,
which reads every due token after the scan's watermark, writes its
``TokenExpired`` outbox row and moves the watermark. The ceiling reads the
same due rows and the columns the scan reads from them (id, owner, name and
expiry), through the same index (``tokens_expiry``, on expires_at and id), in
keyset pages of the scanner's batch size, without writing anything. It is
the median of three reads, taken before the scan. The scan runs at two
sizes, the second ten times the first.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench.common import BenchStack, Row, Section, wait_for_outbox
from services.tokens.config import TokensConfig

# The default PAT_SCAN_BATCH_SIZE; the ceiling reads pages of this size.
BATCH_SIZE: int = TokensConfig.model_fields["scan_batch_size"].default
CEILING_READS = 3
SCAN_TIMEOUT_SECONDS = 1800.0
# How long to watch the relay publish a scan's events. A larger backlog is
# left to the stack's shutdown, except that the next size waits for it.
RELAY_SECONDS = 60.0
TARGET = 0.25

KEYSET_SQL = (
    "SELECT id, user_id, name, expires_at FROM tokens.tokens"
    " WHERE expires_at <= now() AND (expires_at, id) > ($1, $2)"
    " ORDER BY expires_at, id LIMIT $3"
)


@dataclass(frozen=True)
class Scan:
    tokens: int
    due: int
    expired: int
    seconds: float
    ceiling: float
    # Events the relay had left to publish when the scan returned, and how
    # many of them it published in the following ``relay_seconds``.
    backlog: int
    relayed: int
    relay_seconds: float

    @property
    def per_second(self) -> float:
        return self.expired / self.seconds

    @property
    def ratio(self) -> float:
        return self.per_second / self.ceiling


async def seed(dsn: str, total: int) -> int:
    """Replace the tokens with ``total`` new ones; return how many are due.

    The new tokens expired in the past, which no real token can, so both
    watermarks go back to the start.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE tokens.tokens")
        await conn.execute(
            "UPDATE tokens.expiry_watermarks SET expires_at = '1970-01-01T00:00:00Z',"
            " token_id = '00000000-0000-0000-0000-000000000000'"
        )
        await conn.execute(
            "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
            " created_at, expires_at)"
            " SELECT gen_random_uuid(), gen_random_uuid(), 'seed ' || n,"
            " sha256(n::text::bytea), 'k1', now() - interval '40 days',"
            # Distinct expiry instants, one second apart, as real tokens
            # have. With one shared instant a keyset page cannot seek.
            " CASE WHEN n % 10 = 0"
            " THEN now() - interval '1 hour' - n * interval '1 second'"
            " ELSE now() + interval '90 days' + n * interval '1 second' END"
            " FROM generate_series(1, $1) AS n",
            total,
        )
        await conn.execute("VACUUM ANALYZE tokens.tokens")
        # Write the seed's dirty pages out now, so that neither the ceiling
        # nor the scan pays for them.
        await conn.execute("CHECKPOINT")
        due: int = await conn.fetchval(
            "SELECT count(*) FROM tokens.tokens WHERE expires_at <= now()"
        )
        return due
    finally:
        await conn.close()


async def keyset_scan(dsn: str) -> tuple[int, float]:
    """Read every due token in keyset pages; return the count and seconds."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        seen = 0
        last = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
        while True:
            rows = await conn.fetch(KEYSET_SQL, *last, BATCH_SIZE)
            if not rows:
                return seen, time.perf_counter() - started
            seen += len(rows)
            last = (rows[-1]["expires_at"], rows[-1]["id"])
    finally:
        await conn.close()


def measure(bench: BenchStack, total: int) -> Scan:
    dsn = bench.superuser_dsn
    asyncio.run(wait_for_outbox(dsn, "tokens"))
    due = asyncio.run(seed(dsn, total))
    rates = []
    for _ in range(CEILING_READS):
        seen, seconds = asyncio.run(keyset_scan(dsn))
        if seen != due:
            raise RuntimeError(f"the keyset scan read {seen} tokens, {due} are due")
        rates.append(seen / seconds)
    started = time.perf_counter()
    result = bench.api.request(
        "POST", "tokens", "/v1/dev/expiry-scan", timeout=SCAN_TIMEOUT_SECONDS
    )
    seconds = time.perf_counter() - started
    if result["expired"] != due:
        raise RuntimeError(f"the scan expired {result['expired']} tokens, {due} due")
    backlog, left, relay_seconds = asyncio.run(follow_relay(dsn))
    return Scan(
        tokens=total,
        due=due,
        expired=result["expired"],
        seconds=seconds,
        ceiling=statistics.median(rates),
        backlog=backlog,
        relayed=backlog - left,
        relay_seconds=relay_seconds,
    )


async def follow_relay(dsn: str) -> tuple[int, int, float]:
    """Watch the relay for at most ``RELAY_SECONDS``; return the unpublished
    events at the start and at the end, and the seconds watched."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        backlog = left = await unpublished(conn)
        while left and time.monotonic() - started < RELAY_SECONDS:
            await asyncio.sleep(0.5)
            left = await unpublished(conn)
        return backlog, left, time.monotonic() - started
    finally:
        await conn.close()


async def unpublished(conn: asyncpg.Connection[asyncpg.Record]) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM tokens.outbox WHERE published_at IS NULL"
    )
    return count


def run(quick: bool) -> Section:
    tokens = 100_000 if quick else 1_000_000
    with BenchStack() as bench:
        small = measure(bench, tokens // 10)
        large = measure(bench, tokens)
        memory = bench.peak_memory()

    row = Row(
        path=f"expiry scan, {large.tokens:,} tokens, {large.due:,} due",
        figure="expired tokens per second",
        value=large.per_second,
        ceiling="bare keyset scan of the same index",
        ceiling_value=large.ceiling,
        target=TARGET,
    )
    details = [
        f"expiry scan of {scan.tokens:,} tokens: {scan.expired:,} expired in "
        f"{scan.seconds:.1f} s; then the relay published {scan.relayed:,} of "
        f"the {scan.backlog:,} TokenExpired events left in "
        f"{scan.relay_seconds:.1f} s"
        for scan in (small, large)
    ]
    growth = [
        f"expiry scan, {small.tokens:,} → {large.tokens:,} tokens: "
        f"{small.per_second:,.0f} → {large.per_second:,.0f} expired per second "
        f"(ratio {small.ratio:.2f} → {large.ratio:.2f})"
    ]
    return Section(rows=[row], details=details, growth=growth, memory=memory)
