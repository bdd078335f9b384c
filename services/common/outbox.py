"""Transactional outbox: store events with the change, publish them after.

Events are written by ``add_event`` inside the caller's transaction. The
``OutboxRelay`` publishes them to Kafka in id order with an idempotent
producer (``acks=all``), and marks rows only after the broker has confirmed
them, up to ``BATCH_SIZE`` rows with one UPDATE. A crash between publish and
mark republishes those rows with the same ``ce_id``, which consumers skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from faststream.kafka import KafkaBroker

from services.common.cloudevents import encode_headers, encode_value
from services.common.db import Connection, Pool, advisory_key
from services.common.observability import (
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    correlation_id,
)
from services.contracts import Event

log = logging.getLogger(__name__)

BATCH_SIZE = 100


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


async def add_event(
    conn: Connection, schema: str, topic: str, event: Event, occurred_at: datetime
) -> uuid.UUID:
    """Insert ``event`` into the outbox within the caller's transaction."""
    event_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload,"
        " occurred_at, correlation_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        event_id,
        topic,
        event.key(),
        event.ce_type,
        json.dumps(event.model_dump(mode="json")),
        occurred_at,
        correlation_id.get(),
    )
    # Delivered to listeners when the transaction commits, and dropped otherwise.
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
    return event_id


async def add_events(
    conn: Connection,
    schema: str,
    topic: str,
    events: Sequence[Event],
    occurred_at: datetime,
) -> None:
    """Insert many events in one round trip, within the caller's transaction."""
    if not events:
        return
    await conn.executemany(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload,"
        " occurred_at, correlation_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        [
            (
                uuid.uuid4(),
                topic,
                event.key(),
                event.ce_type,
                json.dumps(event.model_dump(mode="json")),
                occurred_at,
                correlation_id.get(),
            )
            for event in events
        ],
    )
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))


class OutboxRelay:
    """Publishes outbox rows to Kafka; one replica at a time holds the lock."""

    def __init__(
        self,
        pool: Pool,
        broker: KafkaBroker,
        schema: str,
        service: str,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._schema = schema
        self._service = service
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Relay until cancelled, retrying after any database or broker error."""
        while True:
            try:
                await self._hold_lock_and_relay()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay for %s failed; retrying", self._schema)
                await asyncio.sleep(self._poll_seconds)

    async def _hold_lock_and_relay(self) -> None:
        async with self._pool.acquire() as conn:
            lock = advisory_key(f"{self._schema}.outbox-relay")
            # Another replica holds the lock while it is alive; poll to take over.
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                await asyncio.sleep(self._poll_seconds)
            channel = notify_channel(self._schema)
            await conn.add_listener(channel, self._on_notify)
            try:
                while True:
                    published = await self.publish_pending(conn)
                    if published < BATCH_SIZE:
                        await self._wait_for_work()
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, self._on_notify)
                    await conn.execute("SELECT pg_advisory_unlock($1)", lock)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait_for_work(self) -> None:
        # LISTEN/NOTIFY wakes the relay at once; the timeout is the fallback.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
        self._wake.clear()

    async def publish_pending(self, conn: Connection) -> int:
        """Publish one batch of unpublished rows in id order; return the count."""
        rows = await conn.fetch(
            "SELECT id, event_id, topic, key, event_type, payload, occurred_at,"
            " correlation_id FROM outbox WHERE published_at IS NULL"
            " ORDER BY id LIMIT $1",
            BATCH_SIZE,
        )
        confirmed: list[int] = []
        try:
            # Every row of the batch is handed to the producer before any
            # confirmation is awaited: the producer keeps one request in
            # flight per partition, so records of one key reach the broker
            # in the order sent. Confirmations are awaited in that order,
            # and only rows up to the first failure are marked.
            pending: list[asyncio.Future[Any]] = []
            try:
                for row in rows:
                    pending.append(await self._publish(row))
                for row, delivery in zip(rows, pending, strict=False):
                    await delivery
                    confirmed.append(row["id"])
                    self._published(row)
            finally:
                # After a failure the later confirmations are not awaited;
                # their outcome is read so that asyncio does not log it.
                for delivery in pending:
                    delivery.add_done_callback(_read_outcome)
        finally:
            # One UPDATE for the confirmed rows of the batch instead of one
            # commit per row. A crash before it republishes those rows with
            # their ce_id, which consumers skip, as after any crash between
            # a confirmation and its mark.
            if confirmed:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
                    confirmed,
                )
        backlog = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        OUTBOX_BACKLOG.labels(self._service).set(backlog)
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> asyncio.Future[Any]:
        """Hand one row to the producer; return its confirmation."""
        headers = encode_headers(
            row["event_id"],
            row["event_type"],
            self._service,
            row["key"],
            row["occurred_at"],
        )
        delivery = await self._broker.publish(
            encode_value(json.loads(row["payload"])),
            row["topic"],
            key=row["key"].encode(),
            headers=headers,
            correlation_id=row["correlation_id"] or str(row["event_id"]),
            no_confirm=True,
        )
        assert isinstance(delivery, asyncio.Future)
        return delivery

    def _published(self, row: asyncpg.Record) -> None:
        EVENTS_PUBLISHED.labels(self._service, row["event_type"]).inc()
        log.info(
            "published %s event_id=%s key=%s",
            row["event_type"],
            row["event_id"],
            row["key"],
        )


def _read_outcome(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()
