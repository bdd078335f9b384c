"""Token lifecycle: creation, listing, revocation, validation and expiry."""

from __future__ import annotations

import enum
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from services.common.cloudevents import Envelope
from services.common.consumer import OUTAGE_ERRORS
from services.common.db import Connection, advisory_key
from services.common.observability import correlation_id
from services.common.outbox import add_event, notify_channel
from services.common.runtime import Runtime
from services.contracts import (
    SettingChanged,
    TokenCreated,
    TokenExpired,
    TokenExpiring,
    TokenRevoked,
    TokenRotated,
    UserCreated,
    UserDeactivated,
    UserUpdated,
)
from services.tokens import secret
from services.tokens.cache import ValidationCache
from services.tokens.clock import Clock
from services.tokens.config import TokensConfig
from services.tokens.usage import UsageRecorder

log = logging.getLogger(__name__)

PAT_ENABLED = "pat_enabled"
PAT_MAX_EXPIRE_DAYS = "pat_max_expire_days"
SETTING_DEFAULTS: dict[str, Any] = {PAT_ENABLED: False, PAT_MAX_EXPIRE_DAYS: 180}

WARNING_BEFORE_EXPIRY = timedelta(days=7)
WARNING_INTERVAL = f"interval '{WARNING_BEFORE_EXPIRY.days} days'"

# The one statement of a validation that misses the cache, with the owner and
# the pat_enabled setting; the benchmark (bench/validation.py) runs it
# bare for comparison.
LOOKUP_SQL = (
    "SELECT t.id, t.user_id, t.hash, t.hash_key_id, t.created_at,"
    " t.rotated_at, t.expires_at, t.revoked_at, t.previous_valid_until,"
    " t.hash = ANY($1::bytea[]) AS current_value,"
    " u.username, u.role, u.active, s.value AS pat_enabled"
    " FROM tokens t LEFT JOIN users u ON u.user_id = t.user_id"
    " LEFT JOIN settings s ON s.key = 'pat_enabled'"
    " WHERE t.hash = ANY($1::bytea[]) OR t.previous_hash = ANY($1::bytea[])"
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    *OUTAGE_ERRORS,
)


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
    issued_at: datetime | None = None  # of the presented value
    expires_at: datetime | None = None


class ValidationUnavailable(Exception):
    """The token could not be checked because the database is unreachable."""


class TokenConflict(Exception):
    """A new token's name is taken, or its owner has the maximum number."""


@dataclass(frozen=True)
class TokenQuery:
    """Filters of an administrator's token listing; None means any."""

    state: Literal["active", "expired", "deleted"] | None = None
    expires_before: datetime | None = None
    # Tokens never used count as last used before any date.
    last_used_before: datetime | None = None


@dataclass(frozen=True)
class Feature:
    enabled: bool
    max_expire_days: int


@dataclass(frozen=True)
class ScanResult:
    expiring: int
    expired: int


@dataclass(frozen=True)
class NewToken:
    """The columns of a token row that creation writes."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    hash: bytes
    hash_key_id: str
    created_at: datetime
    expires_at: datetime


async def insert_token(
    conn: Connection, schema: str, topic: str, new: NewToken, max_active_tokens: int
) -> asyncpg.Record:
    """Insert a token and its ``TokenCreated`` event in the caller's transaction.

    Raises ``TokenConflict`` if the name is taken or the owner already has
    ``max_active_tokens``. A per-user transaction lock makes two concurrent
    creations wait for each other, so neither check can be raced. The
    benchmark (bench/creation.py) runs this function bare as its ceiling.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1)", advisory_key(f"tokens.user.{new.user_id}")
    )
    room = await conn.fetchrow(
        "SELECT count(*) AS active,"
        " count(*) FILTER (WHERE lower(name) = lower($3)) AS same_name"
        " FROM tokens WHERE user_id = $1 AND revoked_at IS NULL"
        " AND expires_at > $2",
        new.user_id,
        new.created_at,
        new.name,
    )
    assert room is not None
    if room["same_name"]:
        raise TokenConflict(
            f"an active token named {new.name!r} exists; choose another name "
            "or delete that token first"
        )
    if room["active"] >= max_active_tokens:
        raise TokenConflict(
            f"you hold {room['active']} active tokens, the maximum is "
            f"{max_active_tokens}; delete one first"
        )
    row = await conn.fetchrow(
        "INSERT INTO tokens (id, user_id, name, hash, hash_key_id,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " RETURNING *",
        new.id,
        new.user_id,
        new.name,
        new.hash,
        new.hash_key_id,
        new.created_at,
        new.expires_at,
    )
    assert row is not None
    event = TokenCreated(
        token_id=new.id,
        user_id=new.user_id,
        name=new.name,
        created_at=new.created_at,
        expires_at=new.expires_at,
    )
    await add_event(conn, schema, topic, event, new.created_at)
    return row


class TokenService:
    def __init__(self, runtime: Runtime, config: TokensConfig, clock: Clock) -> None:
        self.runtime = runtime
        self.clock = clock
        self._hash_keys = config.hash_keys()
        self._hash_key_id = config.hash_key_id
        self._hash_key = self._hash_keys[config.hash_key_id]
        self._scan_batch_size = config.scan_batch_size
        self.max_active_tokens = config.max_active_tokens
        self.cache: ValidationCache[Validation] = ValidationCache(
            config.validation_cache_seconds,
            config.negative_cache_seconds,
            config.validation_cache_entries,
        )
        self.usage = UsageRecorder(lambda: self.runtime.pool)

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
        event: TokenCreated
        | TokenRevoked
        | TokenRotated
        | TokenExpiring
        | TokenExpired,
    ) -> None:
        topic = self.runtime.topics.tokens_events
        await add_event(conn, self.runtime.schema, topic, event, self.clock.now())

    async def create(
        self, user_id: uuid.UUID, name: str, expire_in_days: int
    ) -> tuple[dict[str, Any], str]:
        """Store a new token and return its row and its value, shown once."""
        value = secret.generate()
        now = self.clock.now()
        new = NewToken(
            id=uuid.uuid4(),
            user_id=user_id,
            name=name,
            hash=secret.keyed_hash(self._hash_key, value),
            hash_key_id=self._hash_key_id,
            created_at=now,
            expires_at=now + timedelta(days=expire_in_days),
        )
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await insert_token(
                conn,
                self.runtime.schema,
                self.runtime.topics.tokens_events,
                new,
                self.max_active_tokens,
            )
        log.info("created token %s for user %s", new.id, user_id)
        return dict(row), value

    async def list_for(
        self, user_id: uuid.UUID, query: TokenQuery | None = None
    ) -> list[dict[str, Any]]:
        """List a user's tokens; without a query, those not deleted."""
        query = query or TokenQuery()
        conditions = ["user_id = $1"]
        arguments: list[Any] = [user_id]

        def parameter(value: Any) -> str:
            arguments.append(value)
            return f"${len(arguments)}"

        if query.state is None:
            conditions.append("revoked_at IS NULL")
        elif query.state == "deleted":
            conditions.append("revoked_at IS NOT NULL")
        elif query.state == "active":
            now = parameter(self.clock.now())
            conditions.append(f"revoked_at IS NULL AND expires_at > {now}")
        else:
            now = parameter(self.clock.now())
            conditions.append(f"revoked_at IS NULL AND expires_at <= {now}")
        if query.expires_before is not None:
            conditions.append(f"expires_at < {parameter(query.expires_before)}")
        if query.last_used_before is not None:
            before = parameter(query.last_used_before)
            conditions.append(f"(last_used_at IS NULL OR last_used_at < {before})")
        rows = await self.runtime.pool.fetch(
            f"SELECT * FROM tokens WHERE {' AND '.join(conditions)}"
            " ORDER BY created_at, id",
            *arguments,
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
        # Other replicas drop their entries when the event reaches them.
        self.cache.invalidate_token(token_id)
        log.info("revoked token %s by %s", token_id, by)
        return True

    async def rotate(
        self,
        token_id: uuid.UUID,
        expire_in_days: int,
        overlap: timedelta,
    ) -> tuple[dict[str, Any], str] | None:
        """Give a token a new value and expiry; return its row and the new value.

        The previous value keeps working until the end of ``overlap``, but not
        past the token's old expiry. Returns None if the token does not exist,
        is deleted or has expired.
        """
        value = secret.generate()
        now = self.clock.now()
        expires_at = now + timedelta(days=expire_in_days)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE tokens SET previous_hash = hash,"
                " previous_hash_key_id = hash_key_id,"
                " previous_valid_until = least($2::timestamptz + $3::interval,"
                " expires_at),"
                " hash = $4, hash_key_id = $5, rotated_at = $2,"
                " expires_at = $6::timestamptz"
                " WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2"
                " RETURNING *",
                token_id,
                now,
                overlap,
                secret.keyed_hash(self._hash_key, value),
                self._hash_key_id,
                expires_at,
            )
            if row is None:
                return None
            event = TokenRotated(
                token_id=token_id,
                user_id=row["user_id"],
                name=row["name"],
                expires_at=expires_at,
                rotated_at=now,
                previous_valid_until=row["previous_valid_until"],
            )
            await self._publish(conn, event)
        # Drops the entry of the previous value; other replicas do so when the
        # event reaches them.
        self.cache.invalidate_token(token_id)
        log.info("rotated token %s, overlap %s", token_id, overlap)
        return dict(row), value

    async def validate(self, token: str, address: str | None = None) -> Validation:
        """Decide whether a presented token authenticates, and whose it is.

        Raises ``ValidationUnavailable`` when the result is in neither the
        cache nor the reachable database.
        """
        if not secret.is_well_formed(token):
            return Validation(Outcome.INVALID, "malformed")
        key = secret.keyed_hash(self._hash_key, token)
        now = self.clock.now()
        result = self.cache.get(key, now)
        if result is None:
            generation = self.cache.generation
            try:
                result = await self._look_up(token, key, now)
            except DATABASE_ERRORS as error:
                raise ValidationUnavailable(repr(error)) from error
            self.cache.put(
                key,
                result,
                generation,
                positive=result.outcome is Outcome.VALID,
                expires_at=result.expires_at,
                token_id=result.token_id,
                user_id=result.user_id,
            )
        if result.token_id is not None:
            if result.outcome is Outcome.VALID:
                self.usage.used(result.token_id, now, address)
            else:
                self.usage.rejected(result.token_id, now, result.reason)
        return result

    async def _look_up(self, token: str, key: bytes, now: datetime) -> Validation:
        hashes = [key] + [
            secret.keyed_hash(other, token)
            for key_id, other in self._hash_keys.items()
            if key_id != self._hash_key_id
        ]
        row = await self.runtime.pool.fetchrow(LOOKUP_SQL, hashes)
        if row is None:
            return Validation(Outcome.INVALID, "unknown")

        known = {"token_id": row["id"], "user_id": row["user_id"]}
        expires_at = row["expires_at"]
        if not row["current_value"]:
            # The value that the token had before its last rotation.
            expires_at = min(expires_at, row["previous_valid_until"])
            if now >= expires_at and row["revoked_at"] is None:
                return Validation(Outcome.INVALID, "rotated", **known)
        elif row["hash_key_id"] != self._hash_key_id:
            await self._store_under_current_key(row["id"], row["hash"], key)

        if row["revoked_at"] is not None:
            return Validation(Outcome.INVALID, "deleted", **known)
        if now >= expires_at:
            return Validation(Outcome.INVALID, "expired", **known)

        enabled = row["pat_enabled"]
        if enabled is None:
            enabled = SETTING_DEFAULTS[PAT_ENABLED]
        else:
            enabled = json.loads(enabled)
        if not enabled:
            return Validation(Outcome.FORBIDDEN, "switched off", **known)
        if row["username"] is None or not row["active"]:
            return Validation(Outcome.FORBIDDEN, "owner inactive", **known)
        if row["role"] == "collaborator":
            return Validation(Outcome.FORBIDDEN, "owner is a collaborator", **known)
        return Validation(
            Outcome.VALID,
            "valid",
            username=row["username"],
            role=row["role"],
            issued_at=(row["current_value"] and row["rotated_at"]) or row["created_at"],
            expires_at=expires_at,
            **known,
        )

    async def _store_under_current_key(
        self, token_id: uuid.UUID, old_hash: bytes, new_hash: bytes
    ) -> None:
        # After every token has been used once, or has expired, the earlier key
        # can be removed from the configuration.
        await self.runtime.pool.execute(
            "UPDATE tokens SET hash = $3, hash_key_id = $4 WHERE id = $1 AND hash = $2",
            token_id,
            old_hash,
            new_hash,
            self._hash_key_id,
        )
        log.info("stored token %s under hash key %s", token_id, self._hash_key_id)

    # Expiry.

    async def scan(self) -> ScanResult:
        """Publish every due ``TokenExpired``, then every due ``TokenExpiring``.

        Each kind of event has a watermark: the (expires_at, id) position of
        the last token it has handled. A batch reads the tokens after it in
        that order, writes their events to the outbox and moves the watermark
        in one transaction, with the watermark row locked, so replicas that
        scan at once take turns and never emit an event twice. The warning
        starts from now at the earliest, so a scan after downtime sends no
        stale one-week warning for a token that has already expired.
        """
        expired = await self._scan_all(EXPIRED_SCAN)
        expiring = await self._scan_all(EXPIRING_SCAN)
        if expired or expiring:
            log.info("expiry scan: %d expiring, %d expired", expiring, expired)
        return ScanResult(expiring=expiring, expired=expired)

    async def _scan_all(self, kind: ScanKind) -> int:
        """Handle batches until one comes back short; return the events written."""
        total = 0
        while True:
            read, written = await self._scan_batch(kind)
            total += written
            if read < self._scan_batch_size:
                return total

    async def _scan_batch(self, kind: ScanKind) -> tuple[int, int]:
        """Handle the next batch of due tokens; return how many were read and
        how many events were written.

        Revoked tokens, and for the warning, tokens given a week or less to
        live, are read and passed over, so the watermark moves past them.
        """
        now = self.clock.now()
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            mark = await conn.fetchrow(
                "SELECT expires_at, token_id FROM expiry_watermarks"
                " WHERE kind = $1 FOR UPDATE",
                kind.name,
            )
            if mark is None:
                raise RuntimeError(f"no expiry watermark for {kind.name}")
            start = (mark["expires_at"], mark["token_id"])
            if kind is EXPIRING_SCAN:
                # Tokens that expire at or before now get no warning.
                start = max(start, (now, LAST_UUID))
            row = await conn.fetchrow(
                _scan_statement(kind),
                *start,
                now,
                self._scan_batch_size,
                self.runtime.topics.tokens_events,
                kind.event_type,
                correlation_id.get(),
                kind.name,
                EXPIRY_EVENT_NAMESPACE,
            )
            assert row is not None
            if row["written"]:
                await conn.execute(
                    "SELECT pg_notify($1, '')", notify_channel(self.runtime.schema)
                )
        read: int = row["read"]
        written: int = row["written"]
        return read, written


@dataclass(frozen=True)
class ScanKind:
    """One kind of expiry event: its watermark, the tokens due by ``$3`` (now),
    and the condition on a due token for its event to be written."""

    name: str
    event_type: str
    due: str
    condition: str


LAST_UUID = uuid.UUID(int=(1 << 128) - 1)
EXPIRED_SCAN = ScanKind(
    name="expired",
    event_type=TokenExpired.ce_type,
    due="expires_at <= $3",
    condition="revoked_at IS NULL",
)
EXPIRING_SCAN = ScanKind(
    name="expiring",
    event_type=TokenExpiring.ce_type,
    # Written as a bound on expires_at, so that the index can stop there.
    due=f"expires_at <= $3::timestamptz + {WARNING_INTERVAL}",
    # A token given a week or less to live, at creation or rotation, gets no
    # warning: its owner chose that expiry moments before.
    condition="revoked_at IS NULL"
    f" AND coalesce(rotated_at, created_at) < expires_at - {WARNING_INTERVAL}",
)


def expiry_event_id(kind: str, token_id: uuid.UUID, expires_at_json: str) -> uuid.UUID:
    """Return the id of the ``kind`` event of a token that expires at
    ``expires_at_json`` (as the event's payload writes it).

    The id is a name-based UUID (version 3), so a scan that reads a token
    again writes the event again under the same id: the outbox keeps the
    first, and a consumer's inbox skips a copy that was already published.
    The scan statement computes the same id in SQL.
    """
    return uuid.uuid3(EXPIRY_EVENT_NAMESPACE, f"{kind}/{token_id}/{expires_at_json}")


# The namespace of expiry event ids; changing it changes every id.
EXPIRY_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4b7f-9c0a-2e5b7d91f3a8")


def _scan_statement(kind: ScanKind) -> str:
    """Return the statement that handles one batch of ``kind`` after the
    position ``($1, $2)``.

    It reads the batch in index order, writes the events of the tokens that
    need one, and moves the watermark to the last token read. No row crosses
    into Python. The payload is built as TokenExpired and TokenExpiring
    serialise (tests/e2e/test_lifecycle.py checks it), and the event id as
    ``expiry_event_id`` computes it.
    """
    return (
        "WITH batch AS ("
        " SELECT id, user_id, name, expires_at,"
        f" {_json_datetime('expires_at')} AS expires_at_json,"
        f" {kind.condition} AS needs_event FROM tokens"
        f" WHERE (expires_at, id) > ($1, $2) AND {kind.due}"
        " ORDER BY expires_at, id LIMIT $4),"
        # The MD5 of the namespace and the name "kind/token id/expiry".
        " named AS ("
        " SELECT *, decode(md5(uuid_send($9) || convert_to("
        " $8 || '/' || id || '/' || expires_at_json, 'UTF8')), 'hex') AS digest"
        " FROM batch WHERE needs_event),"
        " events AS ("
        " INSERT INTO outbox (event_id, topic, key, event_type, payload,"
        " occurred_at, correlation_id)"
        # Version 3 in the high nibble of byte 6, variant 10 in the high bits
        # of byte 8, as uuid.uuid3 sets them.
        " SELECT encode(set_byte(set_byte(digest, 6,"
        " (get_byte(digest, 6) & 15) | 48), 8,"
        " (get_byte(digest, 8) & 63) | 128), 'hex')::uuid,"
        " $5, user_id::text, $6,"
        " jsonb_build_object('token_id', id, 'user_id', user_id,"
        " 'name', name, 'expires_at', expires_at_json),"
        " $3, $7 FROM named ORDER BY expires_at, id"
        " ON CONFLICT (event_id) DO NOTHING RETURNING 1),"
        " last AS ("
        " SELECT expires_at, id FROM batch"
        " ORDER BY expires_at DESC, id DESC LIMIT 1),"
        " moved AS ("
        " UPDATE expiry_watermarks SET expires_at = last.expires_at,"
        " token_id = last.id FROM last WHERE kind = $8 RETURNING 1)"
        " SELECT (SELECT count(*) FROM batch) AS read,"
        " (SELECT count(*) FROM events) AS written"
    )


def _json_datetime(column: str) -> str:
    """Return SQL that formats a timestamptz column as pydantic does in JSON.

    That is ISO 8601 in UTC with a ``Z``, and microseconds only when there
    are any: ``2026-01-01T00:00:00Z``, ``2026-01-01T00:00:00.120000Z``.
    """
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE WHEN date_trunc('second', {column}) = {column} THEN ''"
        f" ELSE to_char({utc}, '.US') END || 'Z'"
    )
