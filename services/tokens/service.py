"""Token lifecycle: creation, listing, revocation, validation and expiry."""

from __future__ import annotations

import enum
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.common.cloudevents import Envelope
from services.common.db import Connection
from services.common.outbox import add_event
from services.common.runtime import Runtime
from services.contracts import (
    SettingChanged,
    TokenCreated,
    TokenExpired,
    TokenExpiring,
    TokenRevoked,
    UserCreated,
    UserDeactivated,
    UserUpdated,
)
from services.tokens import secret
from services.tokens.clock import Clock
from services.tokens.config import TokensConfig

log = logging.getLogger(__name__)

PAT_ENABLED = "pat_enabled"
PAT_MAX_EXPIRE_DAYS = "pat_max_expire_days"
SETTING_DEFAULTS: dict[str, Any] = {PAT_ENABLED: False, PAT_MAX_EXPIRE_DAYS: 180}

WARNING_BEFORE_EXPIRY = timedelta(days=7)
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Outcome(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"  # missing, malformed, unknown, expired or deleted
    FORBIDDEN = "forbidden"  # the feature is off, or the owner may not use tokens


@dataclass(frozen=True)
class Validation:
    outcome: Outcome
    reason: str
    token_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    username: str | None = None
    role: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Feature:
    enabled: bool
    max_expire_days: int


@dataclass(frozen=True)
class ScanResult:
    expiring: int
    expired: int


class TokenService:
    def __init__(self, runtime: Runtime, config: TokensConfig, clock: Clock) -> None:
        self.runtime = runtime
        self.clock = clock
        self._hash_key = config.hash_key.get_secret_value().encode()
        self._hash_key_id = config.hash_key_id
        self._scan_batch_size = config.scan_batch_size

    # The development clock.

    async def advance_clock(self, by: timedelta) -> None:
        """Move every replica's clock forward (development only)."""
        if not self.clock.adjustable:
            raise PermissionError("the clock can be moved only in development")
        seconds = await self.runtime.pool.fetchval(
            "UPDATE clock_offset SET offset_seconds = offset_seconds + $1"
            " RETURNING offset_seconds",
            by.total_seconds(),
        )
        self.clock.set_offset(timedelta(seconds=seconds))

    async def refresh_clock(self) -> None:
        seconds = await self.runtime.pool.fetchval(
            "SELECT offset_seconds FROM clock_offset"
        )
        self.clock.set_offset(timedelta(seconds=seconds or 0))

    # Settings and users copied from events.

    async def feature(self) -> Feature:
        rows = await self.runtime.pool.fetch("SELECT key, value FROM settings")
        values = dict(SETTING_DEFAULTS)
        values.update({row["key"]: json.loads(row["value"]) for row in rows})
        return Feature(bool(values[PAT_ENABLED]), int(values[PAT_MAX_EXPIRE_DAYS]))

    async def on_setting_changed(
        self, conn: Connection, event: SettingChanged, _: Envelope
    ) -> None:
        await conn.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2::jsonb)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            event.setting_key,
            json.dumps(event.value),
        )

    async def on_user_changed(
        self, conn: Connection, event: UserCreated | UserUpdated, _: Envelope
    ) -> None:
        await conn.execute(
            "INSERT INTO users (user_id, username, role, active)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE"
            " SET username = excluded.username, role = excluded.role,"
            " active = excluded.active",
            event.user_id,
            event.username,
            event.role,
            event.active,
        )

    async def on_user_deactivated(
        self, conn: Connection, event: UserDeactivated, _: Envelope
    ) -> None:
        # The UserUpdated published with it carries the same change; applying
        # both is harmless, and either one alone stops the user's tokens.
        await conn.execute(
            "UPDATE users SET active = false WHERE user_id = $1", event.user_id
        )

    async def user_known(self, user_id: uuid.UUID) -> bool:
        known = await self.runtime.pool.fetchval(
            "SELECT true FROM users WHERE user_id = $1", user_id
        )
        return bool(known)

    # Tokens.

    async def _publish(
        self,
        conn: Connection,
        event: TokenCreated | TokenRevoked | TokenExpiring | TokenExpired,
    ) -> None:
        topic = self.runtime.topics.tokens_events
        await add_event(conn, self.runtime.schema, topic, event, self.clock.now())

    async def create(
        self, user_id: uuid.UUID, name: str, expire_in_days: int
    ) -> tuple[dict[str, Any], str]:
        """Store a new token and return its row and its value, shown once."""
        value = secret.generate()
        now = self.clock.now()
        expires_at = now + timedelta(days=expire_in_days)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO tokens (id, user_id, name, hash, hash_key_id,"
                " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " RETURNING *",
                uuid.uuid4(),
                user_id,
                name,
                secret.keyed_hash(self._hash_key, value),
                self._hash_key_id,
                now,
                expires_at,
            )
            assert row is not None
            event = TokenCreated(
                token_id=row["id"],
                user_id=user_id,
                name=name,
                created_at=now,
                expires_at=expires_at,
            )
            await self._publish(conn, event)
        log.info("created token %s for user %s", row["id"], user_id)
        return dict(row), value

    async def list_for(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.runtime.pool.fetch(
            "SELECT * FROM tokens WHERE user_id = $1 AND revoked_at IS NULL"
            " ORDER BY created_at, id",
            user_id,
        )
        return [dict(row) for row in rows]

    async def get(self, token_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.runtime.pool.fetchrow(
            "SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL", token_id
        )
        return dict(row) if row else None

    async def revoke(self, token_id: uuid.UUID, by: uuid.UUID) -> bool:
        """Delete a token; return False if it does not exist or is gone already."""
        now = self.clock.now()
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE tokens SET revoked_at = $2, revoked_by = $3"
                " WHERE id = $1 AND revoked_at IS NULL RETURNING *",
                token_id,
                now,
                by,
            )
            if row is None:
                return False
            event = TokenRevoked(
                token_id=token_id,
                user_id=row["user_id"],
                name=row["name"],
                expires_at=row["expires_at"],
                revoked_at=now,
                revoked_by=by,
            )
            await self._publish(conn, event)
        log.info("revoked token %s by %s", token_id, by)
        return True

    async def validate(self, token: str) -> Validation:
        """Decide whether a presented token authenticates, and whose it is."""
        if not secret.is_well_formed(token):
            return Validation(Outcome.INVALID, "malformed")
        row = await self.runtime.pool.fetchrow(
            "SELECT t.id, t.user_id, t.expires_at, t.revoked_at, t.last_used_at,"
            " u.username, u.role, u.active"
            " FROM tokens t LEFT JOIN users u ON u.user_id = t.user_id"
            " WHERE t.hash = $1",
            secret.keyed_hash(self._hash_key, token),
        )
        if row is None:
            return Validation(Outcome.INVALID, "unknown")
        if row["revoked_at"] is not None:
            return Validation(Outcome.INVALID, "deleted", token_id=row["id"])
        now = self.clock.now()
        if now >= row["expires_at"]:
            return Validation(Outcome.INVALID, "expired", token_id=row["id"])
        if not (await self.feature()).enabled:
            return Validation(Outcome.FORBIDDEN, "switched off", token_id=row["id"])
        if row["username"] is None or not row["active"]:
            return Validation(Outcome.FORBIDDEN, "owner inactive", token_id=row["id"])
        if row["role"] == "collaborator":
            return Validation(
                Outcome.FORBIDDEN, "owner is a collaborator", token_id=row["id"]
            )
        await self._touch(row["id"], row["last_used_at"], now)
        return Validation(
            Outcome.VALID,
            "valid",
            token_id=row["id"],
            user_id=row["user_id"],
            username=row["username"],
            role=row["role"],
            expires_at=row["expires_at"],
        )

    async def _touch(
        self, token_id: uuid.UUID, last_used_at: datetime | None, now: datetime
    ) -> None:
        # Written at most once a minute per token, to spare the database.
        if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
            return
        await self.runtime.pool.execute(
            "UPDATE tokens SET last_used_at = $2 WHERE id = $1"
            " AND (last_used_at IS NULL OR last_used_at < $3)",
            token_id,
            now,
            now - LAST_USED_RESOLUTION,
        )

    # Expiry.

    async def scan(self) -> ScanResult:
        """Publish every due ``TokenExpired``, then every due ``TokenExpiring``.

        Rows are claimed with ``FOR UPDATE SKIP LOCKED`` and marked in the
        transaction that writes their events, so replicas that scan at once
        never emit an event twice. Expired tokens are handled first and the
        warning query excludes them, so a scan after downtime sends no stale
        one-week warning for a token that has already expired.
        """
        expired = expiring = 0
        while True:
            count = await self._scan_batch(expired=True)
            expired += count
            if count < self._scan_batch_size:
                break
        while True:
            count = await self._scan_batch(expired=False)
            expiring += count
            if count < self._scan_batch_size:
                break
        if expired or expiring:
            log.info("expiry scan: %d expiring, %d expired", expiring, expired)
        return ScanResult(expiring=expiring, expired=expired)

    async def _scan_batch(self, expired: bool) -> int:
        now = self.clock.now()
        if expired:
            column = "expired_event_at"
            due = "expires_at <= $1"
        else:
            # A token created with a week or less to live gets no warning: its
            # owner chose that expiry moments ago.
            column = "expiring_event_at"
            due = (
                "expires_at > $1 AND expires_at - interval '7 days' <= $1"
                " AND created_at < expires_at - interval '7 days'"
            )
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"UPDATE tokens SET {column} = $1 WHERE id IN ("
                f" SELECT id FROM tokens WHERE {column} IS NULL"
                f" AND revoked_at IS NULL AND {due}"
                " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, user_id, name, expires_at",
                now,
                self._scan_batch_size,
            )
            for row in rows:
                fields = {
                    "token_id": row["id"],
                    "user_id": row["user_id"],
                    "name": row["name"],
                    "expires_at": row["expires_at"],
                }
                event = TokenExpired(**fields) if expired else TokenExpiring(**fields)
                await self._publish(conn, event)
        return len(rows)
