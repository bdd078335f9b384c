"""Idempotent event consumption with bounded retries and a dead-letter topic.

Subscribers use FastStream's ``AckPolicy.NACK_ON_ERROR``: the offset is
committed only after the handler returns, and an exception rewinds the
partition to the failed record. The default ``ACK_FIRST`` commits before the
handler runs, so a crash would lose the event.

Each event's effect and the record of its ``ce_id`` commit in one database
transaction, so a redelivered event changes nothing. An event that cannot be
parsed, or whose handler keeps failing for a reason other than an outage, goes
to the dead-letter topic with the error and its original headers, and the
partition moves on. An outage (database or network unreachable) is re-raised
so that the record is delivered again once the outage ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka.errors import MessageSizeTooLargeError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from services.common.cloudevents import Envelope, InvalidEvent, decode
from services.common.db import Connection, Pool
from services.common.observability import DEAD_LETTERS, EVENTS_CONSUMED, correlation_id
from services.contracts import Event

log = logging.getLogger(__name__)

Handler = Callable[[Connection, Any, Envelope], Awaitable[None]]

MAX_ATTEMPTS = 3
RETRY_BASE_SECONDS = 0.2
OUTAGE_PAUSE_SECONDS = 2.0
TRUNCATED_BYTES = 64 * 1024

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class EventDispatcher:
    """Routes each record of one consumer to the handler for its event type."""

    def __init__(
        self,
        service: str,
        pool: Callable[[], Pool],
        broker: KafkaBroker,
        dead_letter_topic: str,
    ) -> None:
        self._service = service
        self._pool = pool
        self._broker = broker
        self._dead_letter_topic = dead_letter_topic
        self._handlers: dict[str, Handler] = {}

    def register(self, event_type: type[Event], handler: Handler) -> None:
        self._handlers[event_type.ce_type] = handler

    async def handle(self, message: KafkaMessage) -> None:
        """Apply one Kafka record's effect once, skipping repeats, or dead-letter it."""
        record = message.raw_message
        assert not isinstance(record, tuple), "batch subscribers are not used"
        token = correlation_id.set(message.correlation_id or None)
        try:
            await self._handle_record(record)
        finally:
            correlation_id.reset(token)

    async def _handle_record(self, record: Any) -> None:
        headers = list(record.headers or ())
        try:
            envelope = decode(headers, record.value)
        except InvalidEvent as error:
            await self._dead_letter(record, headers, f"invalid event: {error}")
            return

        if envelope.event is None:
            # A type no version of the contracts defines, perhaps from a newer
            # producer: kept as a dead letter, to replay after an upgrade.
            reason = f"unknown event type {envelope.type!r}"
            await self._dead_letter(record, headers, reason, envelope.type)
            return
        handler = self._handlers.get(envelope.type)
        if handler is None:
            self._count(envelope.type, "skipped")
            log.debug("skipped event type %s id=%s", envelope.type, envelope.id)
            return

        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self._apply_once(handler, envelope)
                return
            except OUTAGE_ERRORS as error:
                # The record is delivered again after the rewind; pause so an
                # outage does not turn into a tight retry loop.
                log.warning(
                    "outage while applying %s id=%s: %r",
                    envelope.type,
                    envelope.id,
                    error,
                )
                await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
                raise
            except Exception as error:
                if attempt == MAX_ATTEMPTS:
                    reason = f"handler failed {attempt} times: {error!r}"
                    await self._dead_letter(record, headers, reason, envelope.type)
                    return
                log.warning(
                    "handler for %s id=%s failed (attempt %d); retrying: %r",
                    envelope.type,
                    envelope.id,
                    attempt,
                    error,
                )
                await asyncio.sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1))

    async def _apply_once(self, handler: Handler, envelope: Envelope) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING true",
                envelope.id,
                envelope.type,
            )
            if not inserted:
                self._count(envelope.type, "duplicate")
                log.info("skipped duplicate %s id=%s", envelope.type, envelope.id)
                return
            await handler(conn, envelope.event, envelope)
        self._count(envelope.type, "applied")
        log.info(
            "applied %s id=%s subject=%s", envelope.type, envelope.id, envelope.subject
        )

    def _count(self, event_type: str, outcome: str) -> None:
        EVENTS_CONSUMED.labels(self._service, event_type, outcome).inc()

    async def _dead_letter(
        self,
        record: Any,
        headers: list[tuple[str, bytes]],
        reason: str,
        event_type: str = "unknown",
    ) -> None:
        dead_headers = {name: raw.decode(errors="replace") for name, raw in headers}
        dead_headers.update(
            {
                "dlt_error": reason[:1000],
                "dlt_topic": record.topic,
                "dlt_partition": str(record.partition),
                "dlt_offset": str(record.offset),
            }
        )
        value = record.value or b""
        try:
            await self._broker.publish(
                value, self._dead_letter_topic, key=record.key, headers=dead_headers
            )
        except MessageSizeTooLargeError:
            # The record fitted its own topic but not with the added headers.
            # Keep its first bytes and record its full length in a header.
            dead_headers["dlt_truncated_from"] = str(len(value))
            await self._broker.publish(
                value[:TRUNCATED_BYTES],
                self._dead_letter_topic,
                key=record.key,
                headers=dead_headers,
            )
        self._count(event_type, "dead_lettered")
        DEAD_LETTERS.labels(self._service).inc()
        log.error(
            "dead-lettered record %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
