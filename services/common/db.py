"""Postgres access: a connection pool bound to one schema, and migrations."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.pool.PoolConnectionProxy

COMMON_MIGRATIONS = Path(__file__).parent / "migrations"


async def create_pool(dsn: str, schema: str, max_size: int = 10) -> Pool:
    """Open a pool whose connections resolve unqualified names in ``schema``."""
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        server_settings={"search_path": schema, "timezone": "UTC"},
    )


def advisory_key(name: str) -> int:
    """Map a name to a stable signed 64-bit key for ``pg_advisory_lock``."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(pool: Pool, schema: str, service_migrations: Path) -> None:
    """Apply the shared and the service's SQL files not yet applied, in order.

    A transaction-level advisory lock keeps replicas that start together from
    applying the same file twice.
    """
    files = sorted(COMMON_MIGRATIONS.glob("*.sql"))
    files += sorted(service_migrations.glob("*.sql"))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", advisory_key(f"{schema}.migrate")
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            row["name"]
            for row in await conn.fetch("SELECT name FROM schema_migrations")
        }
        for path in files:
            name = f"{path.parent.parent.name}/{path.name}"
            if name in applied:
                continue
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("applied migration %s to schema %s", name, schema)
