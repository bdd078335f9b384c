"""Migrations that change stored rows, applied to rows of the version before."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from infra.config import InfraConfig
from services.common.db import COMMON_MIGRATIONS
from services.notifier.emails import EXPIRED, PASSWORD_CHANGED, token_email_key

SERVICES = Path(__file__).parents[2] / "services"
TOKENS_MIGRATIONS = SERVICES / "tokens" / "migrations"
NOTIFIER_MIGRATIONS = SERVICES / "notifier" / "migrations"
WATERMARKS = "004_expiry_watermarks.sql"
START = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


def migrations_before_watermarks() -> list[Path]:
    files = sorted(COMMON_MIGRATIONS.glob("*.sql"))
    files += [p for p in sorted(TOKENS_MIGRATIONS.glob("*.sql")) if p.name < WATERMARKS]
    return files


async def migrate_with(
    infra: InfraConfig, tokens: list[tuple[int, bool, bool, bool]]
) -> dict[str, tuple[datetime, uuid.UUID]]:
    """Apply the migrations before the watermarks, insert ``tokens``, apply the
    watermarks; return them.

    Each token is (days from now to its expiry, warned, expired event
    written, revoked), created 30 days ago.
    """
    schema = f"migration_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path TO {schema}")
        for path in migrations_before_watermarks():
            await conn.execute(path.read_text())
        now = datetime.now(UTC)
        await conn.executemany(
            "INSERT INTO tokens (id, user_id, name, hash, hash_key_id, created_at,"
            " expires_at, expiring_event_at, expired_event_at, revoked_at)"
            " VALUES ($1, $1, 'token', $2, 'k1', $3, $4, $5, $6, $7)",
            [
                (
                    uuid.UUID(int=n + 1),
                    bytes([n]) * 32,
                    now - timedelta(days=30),
                    now + timedelta(days=days),
                    now if warned else None,
                    now if expired else None,
                    now if revoked else None,
                )
                for n, (days, warned, expired, revoked) in enumerate(tokens)
            ],
        )
        await conn.execute((TOKENS_MIGRATIONS / WATERMARKS).read_text())
        rows = await conn.fetch(
            "SELECT kind, expires_at, token_id FROM expiry_watermarks"
        )
        return {row["kind"]: (row["expires_at"], row["token_id"]) for row in rows}
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


def token_position(
    watermarks: dict[str, tuple[datetime, uuid.UUID]], kind: str
) -> int | None:
    """Return the number (from 1) of the token a watermark is at, or None at
    the start."""
    if watermarks[kind] == START:
        return None
    return watermarks[kind][1].int


def test_watermarks_start_before_first_waiting_token(infra: InfraConfig) -> None:
    tokens = [
        (-20, True, True, False),  # 1: both events written
        (-10, False, True, False),  # 2: expired during downtime, never warned
        (-5, True, False, True),  # 3: revoked before its expiry event
        (-2, True, False, False),  # 4: expired, its event still waiting
        (3, True, False, False),  # 5: warned, not expired
        (20, False, False, False),  # 6: waiting for its warning
        (40, False, False, False),  # 7
    ]

    watermarks = asyncio.run(migrate_with(infra, tokens))

    assert token_position(watermarks, "expired") == 3
    assert token_position(watermarks, "expiring") == 5


def test_watermarks_at_last_handled_token(infra: InfraConfig) -> None:
    tokens = [
        (-20, True, True, False),
        (-10, True, True, False),
        # Deleted, with half a year left: not a token the scan has passed.
        (180, False, False, True),
    ]

    watermarks = asyncio.run(migrate_with(infra, tokens))

    assert token_position(watermarks, "expired") == 2
    assert token_position(watermarks, "expiring") == 2


def test_watermarks_at_start_without_tokens(infra: InfraConfig) -> None:
    watermarks = asyncio.run(migrate_with(infra, []))

    assert token_position(watermarks, "expired") is None
    assert token_position(watermarks, "expiring") is None


async def rekey_email_requests(infra: InfraConfig) -> list[tuple[str, str]]:
    """Store requests under the older keys, apply the notifier's key
    migration; return each request's key and Message-ID, in order."""
    schema = f"migration_{uuid.uuid4().hex[:8]}"
    files = sorted(COMMON_MIGRATIONS.glob("*.sql"))
    files += sorted(NOTIFIER_MIGRATIONS.glob("*.sql"))
    rekey = files.pop()
    assert rekey.name == "004_expiry_email_keys.sql"
    token_id = uuid.UUID(int=7)
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path TO {schema}")
        for path in files:
            await conn.execute(path.read_text())
        await conn.executemany(
            "INSERT INTO email_requests (dedupe_key, kind, user_id, token_id,"
            " token_name, expires_at, occurred_at, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (
                    f"{EXPIRED}.{token_id}",
                    EXPIRED,
                    token_id,
                    token_id,
                    "old key",
                    EXPIRES_AT,
                    None,
                    f"<{EXPIRED}.{token_id}@notifier.pat.invalid>",
                ),
                (
                    f"{PASSWORD_CHANGED}.event",
                    PASSWORD_CHANGED,
                    token_id,
                    None,
                    None,
                    None,
                    EXPIRES_AT,
                    f"<{PASSWORD_CHANGED}.event@notifier.pat.invalid>",
                ),
            ],
        )
        await conn.execute(rekey.read_text())
        rows = await conn.fetch(
            "SELECT dedupe_key, message_id FROM email_requests ORDER BY id"
        )
        return [(row["dedupe_key"], row["message_id"]) for row in rows]
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


EXPIRES_AT = datetime(2027, 3, 1, 12, 30, 0, 250_000, tzinfo=UTC)


def test_expiry_email_keys_gain_expiry(infra: InfraConfig) -> None:
    token_id = uuid.UUID(int=7)

    rows = asyncio.run(rekey_email_requests(infra))

    assert rows[0][0] == token_email_key(EXPIRED, token_id, EXPIRES_AT)
    assert rows[0][1] == f"<{EXPIRED}.{token_id}@notifier.pat.invalid>"
    assert rows[1][0] == f"{PASSWORD_CHANGED}.event"
