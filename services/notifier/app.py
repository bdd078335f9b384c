"""The notifier service: stores email requests from events and sends them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
from fastapi import FastAPI
from faststream import FastStream
from pydantic import Field, SecretStr

from services.common.cloudevents import Envelope
from services.common.config import ServiceConfig
from services.common.consumer import Delivery
from services.common.db import Connection
from services.common.observability import CORRELATION_HEADER, EMAILS, correlation_id
from services.common.runtime import Runtime
from services.contracts import (
    PasswordChanged,
    TokenExpired,
    TokenExpiring,
    UserCreated,
    UserUpdated,
)
from services.notifier.emails import (
    EXPIRED,
    EXPIRING,
    PASSWORD_CHANGED,
    compose,
    compose_password_changed,
    token_email_key,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SEND_BATCH = 10
# NOTE: a guess. Some SMTP servers limit the messages per connection, and one
# new connection per 100 emails costs little.
MAX_EMAILS_PER_CONNECTION = 100
# One email per token, kind and expiry, however often the event is delivered.
INSERT_TOKEN_REQUEST = (
    "INSERT INTO email_requests (dedupe_key, kind, user_id, token_id,"
    " token_name, expires_at, message_id, correlation_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)
# The same for many requests, one array per column, with the dedupe key and
# Message-ID built by the database from the kind, token id and expiry ($7 is
# the Message-ID domain): the same strings as token_email_key builds. ORDER BY
# keeps the ids in the order of the events.
INSERT_TOKEN_REQUESTS = (
    "INSERT INTO email_requests (dedupe_key, kind, user_id, token_id,"
    " token_name, expires_at, message_id, correlation_id)"
    " SELECT key, kind, user_id, token_id, token_name,"
    " expires_at, '<' || key || '@' || $7 || '>',"
    " correlation_id FROM unnest($1::text[], $2::uuid[], $3::uuid[],"
    " $4::text[], $5::timestamptz[], $6::text[]) WITH ORDINALITY"
    " AS r(kind, user_id, token_id, token_name, expires_at, correlation_id,"
    " position),"
    " LATERAL (SELECT kind || '.' || token_id || '.'"
    " || (extract(epoch FROM expires_at) * 1000000)::bigint AS key) AS k"
    " ORDER BY position"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


class NotifierConfig(ServiceConfig):
    http_port: int = 8104
    database_url: SecretStr = SecretStr(
        "postgresql://notifier_svc:notifier-dev-only@127.0.0.1:15432/pat"
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=11025, ge=1, le=65535)
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = "Personal access tokens <no-reply@example.org>"
    message_id_domain: str = "notifier.pat.invalid"
    send_poll_seconds: float = Field(default=1.0, gt=0)
    max_send_attempts: int = Field(default=20, ge=1)
    max_backoff_seconds: float = Field(default=300.0, gt=0)


class _Connection:
    """An SMTP connection that the sender keeps open while emails are due.

    It is opened on the first send and closed when the queue is empty, after
    ``MAX_EMAILS_PER_CONNECTION`` emails, and after any failed send, so that
    the next email tries a new one. Each email's failure is recorded on its
    own request.
    """

    def __init__(self, config: NotifierConfig) -> None:
        self._config = config
        self._client: aiosmtplib.SMTP | None = None
        self._sent = 0

    async def send(self, message: EmailMessage) -> None:
        if self._client is None:
            client = aiosmtplib.SMTP(
                hostname=self._config.smtp_host,
                port=self._config.smtp_port,
                timeout=self._config.smtp_timeout_seconds,
            )
            await client.connect()
            self._client = client
            self._sent = 0
        try:
            await self._client.send_message(message)
        except Exception:
            # The session may be in any state after an error reply or a
            # broken connection, so the next email starts a new one.
            await self.close()
            raise
        self._sent += 1
        if self._sent >= MAX_EMAILS_PER_CONNECTION:
            await self.close()

    def abort(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


class Notifier:
    def __init__(self, runtime: Runtime, config: NotifierConfig) -> None:
        self.runtime = runtime
        self.config = config
        self._smtp = _Connection(config)

    async def on_user_changed(
        self, conn: Connection, event: UserCreated | UserUpdated, _: Envelope
    ) -> None:
        await conn.execute(
            "INSERT INTO users (user_id, email, display_name, time_zone)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE"
            " SET email = excluded.email, display_name = excluded.display_name,"
            " time_zone = excluded.time_zone",
            event.user_id,
            event.email,
            event.display_name,
            event.time_zone,
        )

    async def on_password_changed(
        self, conn: Connection, event: PasswordChanged, envelope: Envelope
    ) -> None:
        # One email per change: the event id is unique to the change.
        dedupe_key = f"{PASSWORD_CHANGED}.{envelope.id}"
        await conn.execute(
            "INSERT INTO email_requests (dedupe_key, kind, user_id, occurred_at,"
            " message_id, correlation_id) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (dedupe_key) DO NOTHING",
            dedupe_key,
            PASSWORD_CHANGED,
            event.user_id,
            event.changed_at,
            f"<{dedupe_key}@{self.config.message_id_domain}>",
            correlation_id.get(),
        )

    async def on_token_expiring(
        self, conn: Connection, event: TokenExpiring, _: Envelope
    ) -> None:
        await self._request(conn, EXPIRING, event)

    async def on_token_expired(
        self, conn: Connection, event: TokenExpired, _: Envelope
    ) -> None:
        await self._request(conn, EXPIRED, event)

    async def _request(
        self, conn: Connection, kind: str, event: TokenExpiring | TokenExpired
    ) -> None:
        await conn.execute(
            INSERT_TOKEN_REQUEST,
            *self._request_values(kind, event, correlation_id.get()),
        )

    async def on_token_events(
        self, conn: Connection, deliveries: list[Delivery]
    ) -> None:
        """Store the email requests of a batch of TokenExpiring and TokenExpired
        events with one statement."""
        kinds: list[str] = []
        user_ids: list[uuid.UUID] = []
        token_ids: list[uuid.UUID] = []
        names: list[str] = []
        expiries: list[datetime] = []
        correlations: list[str | None] = []
        for delivery in deliveries:
            event = delivery.event
            kinds.append(EXPIRING if isinstance(event, TokenExpiring) else EXPIRED)
            user_ids.append(event.user_id)
            token_ids.append(event.token_id)
            names.append(event.name)
            expiries.append(event.expires_at)
            correlations.append(delivery.correlation_id)
        await conn.execute(
            INSERT_TOKEN_REQUESTS,
            kinds,
            user_ids,
            token_ids,
            names,
            expiries,
            correlations,
            self.config.message_id_domain,
        )

    def _request_values(
        self,
        kind: str,
        event: TokenExpiring | TokenExpired,
        correlation: str | None,
    ) -> tuple[object, ...]:
        dedupe_key = token_email_key(kind, event.token_id, event.expires_at)
        return (
            dedupe_key,
            kind,
            event.user_id,
            event.token_id,
            event.name,
            event.expires_at,
            f"<{dedupe_key}@{self.config.message_id_domain}>",
            correlation,
        )

    async def send_pending(self) -> int:
        """Send one batch of due emails; return how many were attempted.

        Rows stay locked (``FOR UPDATE SKIP LOCKED``) while they are sent, so
        replicas never send the same email at once. The sent rows are marked
        with one statement, in the transaction that locked them. A crash after
        the server accepted an email but before the commit sends it again with
        the same Message-ID, which lets the recipient's mail system recognise
        it.
        """
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT r.*, u.email, u.display_name, u.time_zone"
                " FROM email_requests r JOIN users u ON u.user_id = r.user_id"
                " WHERE r.status = 'pending' AND r.next_attempt_at <= now()"
                " ORDER BY r.id LIMIT $1 FOR UPDATE OF r SKIP LOCKED",
                SEND_BATCH,
            )
            sent = []
            for row in rows:
                if await self._send(conn, row):
                    sent.append(row["id"])
            if sent:
                await conn.execute(
                    "UPDATE email_requests SET status = 'sent', sent_at = now(),"
                    " attempts = attempts + 1, last_error = NULL"
                    " WHERE id = any($1::bigint[])",
                    sent,
                )
        return len(rows)

    async def _send(self, conn: Connection, row: asyncpg.Record) -> bool:
        """Send one email; record a failure on its row and return False."""
        try:
            await self._deliver(row)
        except Exception as error:
            # Any failure stays with its own row, so one bad request never
            # rolls back, and so resends, the rest of the batch.
            EMAILS.labels(row["kind"], "failed").inc()
            await self._record_failure(conn, row, error)
            return False
        EMAILS.labels(row["kind"], "sent").inc()
        log.info(
            "sent %s email %s (token %s) to user %s",
            row["kind"],
            row["id"],
            row["token_id"],
            row["user_id"],
        )
        return True

    def _compose(self, row: asyncpg.Record) -> EmailMessage:
        if row["kind"] == PASSWORD_CHANGED:
            return compose_password_changed(
                sender=self.config.mail_from,
                recipient=row["email"],
                display_name=row["display_name"],
                time_zone=row["time_zone"],
                changed_at=row["occurred_at"],
                message_id=row["message_id"],
            )
        return compose(
            row["kind"],
            sender=self.config.mail_from,
            recipient=row["email"],
            display_name=row["display_name"],
            time_zone=row["time_zone"],
            token_name=row["token_name"],
            expires_at=row["expires_at"],
            message_id=row["message_id"],
        )

    async def _deliver(self, row: asyncpg.Record) -> None:
        message = self._compose(row)
        if row["correlation_id"]:
            message[CORRELATION_HEADER] = row["correlation_id"]
        await self._smtp.send(message)

    async def _record_failure(
        self, conn: Connection, row: asyncpg.Record, error: Exception
    ) -> None:
        attempts = row["attempts"] + 1
        delay = min(2.0**attempts, self.config.max_backoff_seconds)
        gave_up = attempts >= self.config.max_send_attempts
        await conn.execute(
            "UPDATE email_requests SET attempts = $2, last_error = $3,"
            " next_attempt_at = $4, status = $5 WHERE id = $1",
            row["id"],
            attempts,
            repr(error)[:500],
            datetime.now(UTC) + timedelta(seconds=delay),
            "failed" if gave_up else "pending",
        )
        log.warning(
            "sending %s email %s failed (attempt %d); %s: %r",
            row["kind"],
            row["id"],
            attempts,
            "giving up" if gave_up else f"retrying in {delay:.0f} s",
            error,
        )

    async def send_forever(self) -> None:
        try:
            while True:
                if await self.send_pending() < SEND_BATCH:
                    # Nothing more is due now: release the SMTP connection
                    # rather than let the server time it out.
                    await self._smtp.close()
                    await asyncio.sleep(self.config.send_poll_seconds)
        finally:
            # Shutdown should not wait for the server's reply to QUIT.
            self._smtp.abort()


def create_app(config: NotifierConfig | None = None) -> FastAPI:
    config = config or NotifierConfig()
    runtime = Runtime("notifier", config, MIGRATIONS)
    notifier = Notifier(runtime, config)
    runtime.add_worker(notifier.send_forever)

    profile_events = runtime.consume(runtime.topics.profile_events, batch=True)
    profile_events.register(UserCreated, notifier.on_user_changed)
    profile_events.register(UserUpdated, notifier.on_user_changed)
    profile_events.register(PasswordChanged, notifier.on_password_changed)
    tokens_events = runtime.consume(runtime.topics.tokens_events, batch=True)
    # Their one effect is an email request whose dedupe_key makes a repeat do
    # nothing, so they need no inbox row.
    tokens_events.register(
        TokenExpiring,
        notifier.on_token_expiring,
        notifier.on_token_events,
        idempotent=True,
    )
    tokens_events.register(
        TokenExpired,
        notifier.on_token_expired,
        notifier.on_token_events,
        idempotent=True,
    )

    return runtime.create_app("notifier")


def main() -> None:
    config = NotifierConfig()
    app = create_app(config)
    app.state.runtime.serve(app)


def asyncapi_app() -> FastStream:
    """Build the application that ``faststream docs gen --factory`` documents."""
    app = create_app(NotifierConfig(environment="development"))
    runtime: Runtime = app.state.runtime
    return runtime.faststream_app()
