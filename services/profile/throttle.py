"""Limits on failed sign-ins, per username and per client address.

Counts live in Postgres, so every replica enforces the same limits. A
username that does not exist is limited exactly like one that does, so a
429 never reveals whether an account exists or is locked.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fastapi import HTTPException, status

from services.common.db import Pool


class SignInThrottle:
    def __init__(
        self,
        pool: Pool,
        max_per_username: int,
        max_per_address: int,
        window: timedelta,
    ) -> None:
        self._pool = pool
        self._max_per_username = max_per_username
        self._max_per_address = max_per_address
        self._window = window

    async def check(self, username: str, address: str, now: datetime) -> None:
        """Raise 429 with Retry-After if either limit is reached."""
        since = now - self._window
        row = await self._pool.fetchrow(
            "SELECT"
            " count(*) FILTER (WHERE username = $1) AS by_username,"
            " min(failed_at) FILTER (WHERE username = $1) AS username_oldest,"
            " count(*) FILTER (WHERE client_address = $2) AS by_address,"
            " min(failed_at) FILTER (WHERE client_address = $2) AS address_oldest"
            " FROM sign_in_failures"
            " WHERE failed_at > $3 AND (username = $1 OR client_address = $2)",
            username.lower(),
            address,
            since,
        )
        assert row is not None
        oldest: list[datetime] = []
        if row["by_username"] >= self._max_per_username:
            oldest.append(row["username_oldest"])
        if row["by_address"] >= self._max_per_address:
            oldest.append(row["address_oldest"])
        if not oldest:
            return
        free_at = max(oldest) + self._window
        retry_after = max(1, math.ceil((free_at - now).total_seconds()))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins; retry after {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )

    async def record_failure(self, username: str, address: str, now: datetime) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM sign_in_failures WHERE failed_at < $1",
                now - self._window,
            )
            await conn.execute(
                "INSERT INTO sign_in_failures (username, client_address, failed_at)"
                " VALUES ($1, $2, $3)",
                username.lower(),
                address,
                now,
            )

    async def record_success(self, username: str) -> None:
        await self._pool.execute(
            "DELETE FROM sign_in_failures WHERE username = $1", username.lower()
        )
