"""Last use and last rejection of each token, written in batches off the hot path.

Validation only records in memory. A worker writes the records once a second
with one statement per kind, and the statement itself keeps each column to at
most one write a minute per token, across replicas too.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from services.common.db import Pool

log = logging.getLogger(__name__)

RESOLUTION = timedelta(minutes=1)
FLUSH_SECONDS = 1.0
MAX_PENDING = 100_000


# A textual IPv6 address has at most 45 characters (eight groups, the last
# two written as IPv4), and a zone id such as %eth0 adds a few more. Longer
# values are not addresses, so they are neither parsed nor cached.
MAX_ADDRESS_CHARS = 64


def parse_address(text: str | None) -> str | None:
    """Return a normalised IPv4 or IPv6 address, or None if ``text`` is not one."""
    if not text or len(text) > MAX_ADDRESS_CHARS:
        return None
    return _parse_address(text)


# Forward auth parses the gateway's address on every request, and the
# ipaddress module took about 5 % of a cache hit's time in py-spy.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


class UsageRecorder:
    """Collects uses and rejections per token and writes them to ``tokens``."""

    def __init__(self, pool: Callable[[], Pool]) -> None:
        self._pool = pool
        self._uses: dict[uuid.UUID, tuple[datetime, str | None]] = {}
        self._rejections: dict[uuid.UUID, tuple[datetime, str]] = {}
        self._last_use_queued: dict[uuid.UUID, datetime] = {}
        self._last_rejection_queued: dict[uuid.UUID, datetime] = {}
        self.dropped = 0

    def used(self, token_id: uuid.UUID, at: datetime, address: str | None) -> None:
        if not self._due(self._last_use_queued, token_id, at):
            return
        if len(self._uses) >= MAX_PENDING:
            self.dropped += 1
            return
        self._last_use_queued[token_id] = at
        self._uses[token_id] = (at, address)

    def rejected(self, token_id: uuid.UUID, at: datetime, reason: str) -> None:
        if not self._due(self._last_rejection_queued, token_id, at):
            return
        if len(self._rejections) >= MAX_PENDING:
            self.dropped += 1
            return
        self._last_rejection_queued[token_id] = at
        self._rejections[token_id] = (at, reason)

    @staticmethod
    def _due(
        queued: dict[uuid.UUID, datetime], token_id: uuid.UUID, at: datetime
    ) -> bool:
        last = queued.get(token_id)
        return last is None or at - last >= RESOLUTION

    async def run(self) -> None:
        """Flush every second until cancelled, then flush once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                try:
                    await self.flush()
                except (asyncpg.PostgresError, OSError) as error:
                    log.warning("could not record token use; dropped: %r", error)
        finally:
            if self._uses or self._rejections:
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
        uses, self._uses = self._uses, {}
        rejections, self._rejections = self._rejections, {}
        if uses:
            await self._pool().execute(
                "UPDATE tokens AS t SET last_used_at = u.at,"
                " last_used_address = u.address"
                " FROM unnest($1::uuid[], $2::timestamptz[], $3::inet[])"
                " AS u(id, at, address)"
                " WHERE t.id = u.id AND (t.last_used_at IS NULL"
                " OR t.last_used_at <= u.at - $4::interval)",
                list(uses),
                [at for at, _ in uses.values()],
                [address for _, address in uses.values()],
                RESOLUTION,
            )
        if rejections:
            await self._pool().execute(
                "UPDATE tokens AS t SET last_rejected_at = r.at,"
                " last_rejection_reason = r.reason"
                " FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])"
                " AS r(id, at, reason)"
                " WHERE t.id = r.id AND (t.last_rejected_at IS NULL"
                " OR t.last_rejected_at <= r.at - $4::interval)",
                list(rejections),
                [at for at, _ in rejections.values()],
                [reason for _, reason in rejections.values()],
                RESOLUTION,
            )
        self._forget_old(self._last_use_queued)
        self._forget_old(self._last_rejection_queued)

    @staticmethod
    def _forget_old(queued: dict[uuid.UUID, datetime]) -> None:
        # Keeps the maps to the tokens used within the last minute or so.
        if not queued:
            return
        newest = max(queued.values())
        for token_id in [t for t, at in queued.items() if newest - at > RESOLUTION]:
            del queued[token_id]
