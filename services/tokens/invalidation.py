"""Every replica's own reader of the events that make cached validations stale.

The durable consumers of ``Runtime.consume`` share one consumer group per
service, so replicas split the partitions between them. Cache invalidation
needs every event in every replica, so this reader joins no group: it assigns
itself every partition of the topics, starts at their end, and commits
nothing. The cache is enabled only once the reader has fixed its start
offsets, and is disabled again whenever the reader stops.

Token events need no database change here, because the tokens service commits
a revocation before its outbox relay publishes the event. A user or setting
event, though, changes the ``users`` and ``settings`` tables only when the
durable consumer (in whichever replica owns the partition) has applied it. So
the reader drops the entries at once and again after it has seen the event's
``ce_id`` in ``processed_events``, which removes any entry that was filled from
the old rows in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.common.cloudevents import Envelope, InvalidEvent, decode
from services.common.db import Pool
from services.contracts import (
    SettingChanged,
    TokenExpired,
    TokenRevoked,
    TokenRotated,
    UserCreated,
    UserDeactivated,
    UserUpdated,
)
from services.tokens.cache import ValidationCache

log = logging.getLogger(__name__)

APPLIED_POLL_SECONDS = 0.05
APPLIED_WAIT_SECONDS = 30.0


class InvalidationListener:
    """Reads token, user and setting events and removes cache entries."""

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        cache: ValidationCache[Any],
        pool: Callable[[], Pool],
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._cache = cache
        self._pool = pool
        # Event id to (event type, time.monotonic() deadline, invalidation).
        self._waiting: dict[str, tuple[str, float, Callable[[], None]]] = {}
        self._checker: asyncio.Task[None] | None = None

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id="tokens-cache-invalidation",
        )
        await consumer.start()
        try:
            partitions = await self._partitions()
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            # position() resolves the end offsets now, so every event published
            # from here on is read, and the cache may start to fill.
            for partition in partitions:
                await consumer.position(partition)
            self._cache.enable()
            log.info("validation cache enabled; reading %d partitions", len(partitions))
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._apply(record.headers or (), record.value)
        finally:
            self._cache.disable()
            log.warning("validation cache disabled: the invalidation reader stopped")
            if self._checker is not None:
                self._checker.cancel()
            self._waiting.clear()
            await consumer.stop()

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(self._topics)
        finally:
            await admin.close()
        partitions: list[TopicPartition] = []
        for topic in described:
            numbers = [entry["partition"] for entry in topic["partitions"]]
            if topic["error_code"] or not numbers:
                message = (
                    f"topic {topic['topic']} has no partitions "
                    f"(error code {topic['error_code']})"
                )
                raise RuntimeError(message)
            partitions.extend(TopicPartition(topic["topic"], n) for n in numbers)
        return partitions

    def _apply(self, headers: Any, value: bytes | None) -> None:
        try:
            envelope = decode(list(headers), value)
        except InvalidEvent as error:
            log.debug("invalidation reader skipped a record: %s", error)
            return
        event = envelope.event
        if isinstance(event, TokenRevoked | TokenExpired | TokenRotated):
            self._cache.invalidate_token(event.token_id)
        elif isinstance(event, UserCreated | UserUpdated | UserDeactivated):
            user_id = event.user_id
            self._cache.invalidate_user(user_id)
            self._after_applied(envelope, lambda: self._cache.invalidate_user(user_id))
        elif isinstance(event, SettingChanged):
            self._cache.clear()
            self._after_applied(envelope, self._cache.clear)

    def _after_applied(
        self, envelope: Envelope, invalidate: Callable[[], None]
    ) -> None:
        deadline = time.monotonic() + APPLIED_WAIT_SECONDS
        self._waiting[envelope.id] = (envelope.type, deadline, invalidate)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._invalidate_when_applied())

    async def _invalidate_when_applied(self) -> None:
        """Run each waiting invalidation once its event is applied or too old.

        One query a poll checks every waiting event, so a burst of events
        costs no more database work than one.
        """
        while self._waiting:
            await asyncio.sleep(APPLIED_POLL_SECONDS)
            waiting = list(self._waiting)
            try:
                rows = await self._pool().fetch(
                    "SELECT event_id FROM processed_events WHERE event_id = ANY($1)",
                    waiting,
                )
                applied = {row["event_id"] for row in rows}
            except Exception as error:
                log.warning("could not read processed_events: %r", error)
                applied = set()
            now = time.monotonic()
            for event_id in waiting:
                event_type, deadline, invalidate = self._waiting[event_id]
                if event_id in applied:
                    del self._waiting[event_id]
                    invalidate()
                elif now >= deadline:
                    del self._waiting[event_id]
                    invalidate()
                    log.warning(
                        "%s id=%s was not applied within %.0f s; "
                        "dropped its entries anyway",
                        event_type,
                        event_id,
                        APPLIED_WAIT_SECONDS,
                    )
