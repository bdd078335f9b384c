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

A batch subscriber (``Runtime.consume(topic, batch=True)``) applies a whole
batch of records in one transaction and commits the offset once for it. When
any event of the batch fails for a reason other than an outage, the batch is
rolled back and its events are applied one at a time, with the retries and
dead letters above.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from services.common.cloudevents import (
    Envelope,
    InvalidEvent,
    decode_attributes,
    header_map,
)
from services.common.db import Connection, Pool
from services.common.observability import DEAD_LETTERS, EVENTS_CONSUMED, correlation_id
from services.contracts import Event

log = logging.getLogger(__name__)

Handler = Callable[[Connection, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """One event of a batch, with the correlation id that it travelled with."""

    event: Any
    envelope: Envelope
    correlation_id: str | None


BatchHandler = Callable[[Connection, list[Delivery]], Awaitable[None]]


@dataclass(frozen=True)
class _Rejection:
    """The reason to dead-letter a record, and the event type to count it under."""

    reason: str
    event_type: str = "unknown"


# A record of a batch with its headers, and what to do with it.
_Accepted = tuple[Any, list[tuple[str, bytes]], Delivery]
_Rejected = tuple[Any, list[tuple[str, bytes]], _Rejection]


@dataclass(frozen=True)
class _Applying:
    """A batch being applied: its records, whether its transaction committed
    (False when it was not applied), and the task that applies it and then
    commits its offsets."""

    records: tuple[Any, ...]
    applied: asyncio.Future[bool]
    task: asyncio.Task[None]


MAX_ATTEMPTS = 3
RETRY_BASE_SECONDS = 0.2
OUTAGE_PAUSE_SECONDS = 2.0
TRUNCATED_BYTES = 64 * 1024

# Records a batch's event ids and types in the inbox; returns the new ids.
INSERT_INBOX_IDS = (
    "INSERT INTO processed_events (event_id, event_type)"
    " SELECT * FROM unnest($1::text[], $2::text[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)

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
        self._batch_handlers: dict[str, BatchHandler] = {}
        self._without_inbox: set[str] = set()
        # The last batch handed over to a task of its own.
        self._pending: _Applying | None = None

    def register(
        self,
        event_type: type[Event],
        handler: Handler,
        batch_handler: BatchHandler | None = None,
        *,
        idempotent: bool = False,
    ) -> None:
        """Route ``event_type`` to ``handler``.

        A batch subscriber calls ``batch_handler``, when given, once for each
        run of consecutive events that share it, in place of ``handler`` per
        event. Both must have the same effect.

        With ``idempotent``, the handlers' effect is already the same however
        often an event is applied (an insert that a unique key of its own
        turns into nothing), so no inbox row is written for the type and
        repeats are not counted as duplicates: see
        docs/decisions/consumer-ack-policy.md.
        """
        self._handlers[event_type.ce_type] = handler
        if batch_handler is not None:
            self._batch_handlers[event_type.ce_type] = batch_handler
        if idempotent:
            self._without_inbox.add(event_type.ce_type)
        else:
            self._without_inbox.discard(event_type.ce_type)

    async def handle(self, message: KafkaMessage) -> None:
        """Apply one Kafka record's effect once, skipping repeats, or dead-letter it."""
        record = message.raw_message
        assert not isinstance(record, tuple), "batch subscribers are not used"
        token = correlation_id.set(message.correlation_id or None)
        try:
            await self._handle_record(record)
        finally:
            correlation_id.reset(token)

    async def handle_batch(self, message: KafkaMessage) -> None:
        """Decode a batch of Kafka records and start applying it in one
        transaction, once the previous batch's transaction has committed.

        The batch is applied by a task of its own, so that this subscriber
        fetches and decodes the next batch while the database writes this
        one. The task commits the batch's offsets after its transaction and
        after the previous batch's offsets. When a batch is not applied (an
        outage, or anything unexpected), every partition of it, and of the
        batch fetched after it, is rewound to its first record there, so
        both are delivered again.
        """
        records = message.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        consumer: Any = getattr(message, "consumer", None)
        previous = self._pending
        try:
            accepted, rejected = self._decode_batch(records)
            if previous is not None:
                either: list[asyncio.Future[Any]] = [previous.applied, previous.task]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not (previous.applied.done() and previous.applied.result()):
                    # The previous batch rewound its partitions already.
                    self._pending = None
                    _rewind(consumer, previous.records + records)
                    return
        except BaseException:
            _rewind(consumer, records)
            raise
        applied = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._apply_and_commit(
                consumer, records, accepted, rejected, applied, previous
            )
        )
        self._pending = _Applying(records, applied, task)

    async def drain(self) -> None:
        """Wait until the batch being applied, if any, is applied and its
        offsets committed, or given up."""
        pending = self._pending
        if pending is not None:
            await asyncio.wait([pending.task])

    def _decode_batch(
        self, records: tuple[Any, ...]
    ) -> tuple[list[_Accepted], list[_Rejected]]:
        accepted: list[_Accepted] = []
        rejected: list[_Rejected] = []
        for record in records:
            headers = list(record.headers or ())
            outcome = self._decode(record, headers)
            if isinstance(outcome, _Rejection):
                rejected.append((record, headers, outcome))
            elif outcome is not None:
                accepted.append((record, headers, outcome))
        return accepted, rejected

    async def _apply_and_commit(
        self,
        consumer: Any,
        records: tuple[Any, ...],
        accepted: list[_Accepted],
        rejected: list[_Rejected],
        applied: asyncio.Future[bool],
        previous: _Applying | None,
    ) -> None:
        """Apply a decoded batch, tell ``applied`` whether it was, then commit
        its offsets after ``previous`` has. A batch that was not applied is
        rewound, to be delivered again."""
        try:
            await self._apply_decoded(accepted, rejected)
        except BaseException as error:
            applied.set_result(False)
            _rewind(consumer, records)
            if not isinstance(error, Exception):
                raise
            if not isinstance(error, OUTAGE_ERRORS):
                log.exception("a batch of %d records was not applied", len(records))
            return
        applied.set_result(True)
        if previous is not None:
            # Commits in order, so that the committed offset never goes back.
            await asyncio.wait([previous.task])
        if consumer is None:
            return
        try:
            await consumer.commit(_next_offsets(records))
        except Exception as error:
            # The effects are stored, and the next batch's commit covers
            # these offsets too. A restart before then redelivers them, and
            # the inbox or the handlers' own keys skip them.
            log.warning("committing the offsets of a batch failed: %r", error)

    async def _apply_decoded(
        self, accepted: list[_Accepted], rejected: list[_Rejected]
    ) -> None:
        """Apply the accepted events in one transaction, then dead-letter the
        rejected records.

        Records that do not parse are dead-lettered after the batch commits,
        so that a batch redelivered after an outage does not dead-letter them
        twice.

        NOTE: an event that fails in the one-at-a-time fallback is
        dead-lettered at once, so an outage later in the same batch, which
        rewinds it, dead-letters that event a second time.
        """
        if accepted:
            try:
                await self._apply_batch([delivery for _, _, delivery in accepted])
            except OUTAGE_ERRORS as error:
                log.warning(
                    "outage while applying a batch of %d events: %r",
                    len(accepted),
                    error,
                )
                await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
                raise
            except Exception as error:
                log.warning(
                    "applying a batch of %d events failed; applying them one at a"
                    " time: %r",
                    len(accepted),
                    error,
                )
                for record, headers, delivery in accepted:
                    token = correlation_id.set(delivery.correlation_id)
                    try:
                        await self._apply_with_retries(
                            record, headers, delivery.envelope
                        )
                    finally:
                        correlation_id.reset(token)
        for record, headers, rejection in rejected:
            await self._dead_letter(
                record, headers, rejection.reason, rejection.event_type
            )

    def _decode(
        self, record: Any, headers: list[tuple[str, bytes]]
    ) -> Delivery | _Rejection | None:
        """Return the event to apply, the reason to dead-letter the record,
        or None for an event type that this consumer does not handle."""
        try:
            attributes = header_map(headers)
            envelope = decode_attributes(attributes, record.value)
        except InvalidEvent as error:
            return _Rejection(f"invalid event: {error}")
        if envelope.event is None:
            # A type no version of the contracts defines, perhaps from a newer
            # producer: kept as a dead letter, to replay after an upgrade.
            return _Rejection(f"unknown event type {envelope.type!r}", envelope.type)
        if envelope.type not in self._handlers:
            self._count(envelope.type, "skipped")
            log.debug("skipped event type %s id=%s", envelope.type, envelope.id)
            return None
        # FastStream's publisher sets the correlation_id header.
        correlation = attributes.get("correlation_id") or None
        return Delivery(envelope.event, envelope, correlation)

    async def _handle_record(self, record: Any) -> None:
        headers = list(record.headers or ())
        outcome = self._decode(record, headers)
        if isinstance(outcome, _Rejection):
            await self._dead_letter(record, headers, outcome.reason, outcome.event_type)
        elif outcome is not None:
            await self._apply_with_retries(record, headers, outcome.envelope)

    async def _apply_with_retries(
        self, record: Any, headers: list[tuple[str, bytes]], envelope: Envelope
    ) -> None:
        handler = self._handlers[envelope.type]
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

    async def _apply_batch(self, deliveries: list[Delivery]) -> None:
        without_inbox = self._without_inbox
        recorded = [d for d in deliveries if d.envelope.type not in without_inbox]
        async with self._pool().acquire() as conn, conn.transaction():
            new_ids: set[str] = set()
            if recorded:
                inserted = await conn.fetch(
                    INSERT_INBOX_IDS,
                    [delivery.envelope.id for delivery in recorded],
                    [delivery.envelope.type for delivery in recorded],
                )
                new_ids = {row["event_id"] for row in inserted}
            fresh: list[Delivery] = []
            for delivery in deliveries:
                envelope = delivery.envelope
                if envelope.type in without_inbox:
                    fresh.append(delivery)
                elif envelope.id in new_ids:
                    # Removed, so that a second copy in the same batch is a
                    # duplicate too.
                    new_ids.discard(envelope.id)
                    fresh.append(delivery)
                else:
                    self._count(envelope.type, "duplicate")
                    log.info("skipped duplicate %s id=%s", envelope.type, envelope.id)
            for batch_handler, run in self._runs(fresh):
                if batch_handler is not None:
                    await batch_handler(conn, run)
                    continue
                for delivery in run:
                    handler = self._handlers[delivery.envelope.type]
                    token = correlation_id.set(delivery.correlation_id)
                    try:
                        await handler(conn, delivery.event, delivery.envelope)
                    finally:
                        correlation_id.reset(token)
        applied = Counter(delivery.envelope.type for delivery in fresh)
        for event_type, count in applied.items():
            self._count(event_type, "applied", count)
        for delivery in fresh:
            envelope = delivery.envelope
            log.info(
                "applied %s id=%s subject=%s",
                envelope.type,
                envelope.id,
                envelope.subject,
            )

    def _runs(
        self, deliveries: list[Delivery]
    ) -> Iterator[tuple[BatchHandler | None, list[Delivery]]]:
        """Split ``deliveries`` in order into runs that share a batch handler.

        Events without a batch handler come in runs of one.
        """
        run: list[Delivery] = []
        current: BatchHandler | None = None
        for delivery in deliveries:
            batch_handler = self._batch_handlers.get(delivery.envelope.type)
            if run and (batch_handler is None or batch_handler != current):
                yield current, run
                run = []
            run.append(delivery)
            current = batch_handler
        if run:
            yield current, run

    async def _apply_once(self, handler: Handler, envelope: Envelope) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            inserted = envelope.type in self._without_inbox or await conn.fetchval(
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

    def _count(self, event_type: str, outcome: str, count: int = 1) -> None:
        EVENTS_CONSUMED.labels(self._service, event_type, outcome).inc(count)

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


def _next_offsets(records: tuple[Any, ...]) -> dict[TopicPartition, int]:
    """Return the offset after the last of ``records`` in each partition."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return {TopicPartition(*key): offset for key, offset in offsets.items()}


def _rewind(consumer: Any, records: tuple[Any, ...]) -> None:
    """Seek each partition of ``records`` back to its first record there.

    A partition no longer assigned to this consumer is left to its new
    owner, which starts from the last committed offset.
    """
    if consumer is None:
        return
    earliest: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        earliest[key] = min(earliest.get(key, record.offset), record.offset)
    for key, offset in earliest.items():
        partition = TopicPartition(*key)
        try:
            consumer.seek(partition, offset)
        except Exception as error:
            # Not assigned any more (a rebalance), or the consumer stopped.
            log.info("not rewinding %s to %d: %r", partition, offset, error)
