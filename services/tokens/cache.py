"""A per-process cache of validation results, emptied by events.

Entries are keyed by the token's HMAC under the current key, so the cache never
contains a token value. Each entry has a maximum age (shorter for rejections),
and an entry for a valid token is dropped once the service clock reaches the
token's ``expires_at``. Events remove entries sooner: by token id
(``TokenRevoked``, ``TokenExpired``), by user id (``UserUpdated``,
``UserDeactivated``) or all at once (``SettingChanged``).

A lookup that started before an invalidation must not store its result
afterwards, because it may have read the database before the change. Every
invalidation therefore increases ``generation``, and ``put`` drops a result
whose lookup began under an older generation.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CacheEntry(Generic[T]):
    value: T
    stale_at: float  # time.monotonic() seconds
    expires_at: datetime | None
    token_id: uuid.UUID | None
    user_id: uuid.UUID | None


class ValidationCache(Generic[T]):
    """Bounded LRU map from token hash to a validation result.

    The cache starts disabled: ``enable`` is called once the invalidation
    listener reads the event topics, so no entry is stored that an event could
    not remove.
    """

    def __init__(
        self,
        max_age_seconds: float,
        negative_max_age_seconds: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age_seconds
        self._negative_max_age = negative_max_age_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[bytes, CacheEntry[T]] = OrderedDict()
        self._by_token: dict[uuid.UUID, set[bytes]] = {}
        self._by_user: dict[uuid.UUID, set[bytes]] = {}
        self._enabled = False
        self.generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __len__(self) -> int:
        return len(self._entries)

    def enable(self) -> None:
        if self._max_age > 0:
            self._enabled = True

    def disable(self) -> None:
        """Stop caching and drop every entry, for when events stop arriving."""
        self._enabled = False
        self.clear()

    def get(self, key: bytes, now: datetime) -> T | None:
        """Return the cached result, or None when absent, too old or expired."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if self._monotonic() >= entry.stale_at or (
            entry.expires_at is not None and now >= entry.expires_at
        ):
            self._remove(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.value

    def put(
        self,
        key: bytes,
        value: T,
        generation: int,
        *,
        positive: bool,
        expires_at: datetime | None = None,
        token_id: uuid.UUID | None = None,
        user_id: uuid.UUID | None = None,
    ) -> None:
        """Store a lookup's result unless an invalidation happened since it began.

        ``expires_at`` bounds the entry by the service clock, so a valid result
        is never served at or after the token's expiry.
        """
        if not self._enabled or generation != self.generation:
            return
        max_age = self._max_age if positive else self._negative_max_age
        if max_age <= 0:
            return
        if key in self._entries:
            self._remove(key)
        entry = CacheEntry(
            value, self._monotonic() + max_age, expires_at, token_id, user_id
        )
        self._entries[key] = entry
        if token_id is not None:
            self._by_token.setdefault(token_id, set()).add(key)
        if user_id is not None:
            self._by_user.setdefault(user_id, set()).add(key)
        while len(self._entries) > self._max_entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def invalidate_token(self, token_id: uuid.UUID) -> None:
        self.generation += 1
        for key in self._by_token.pop(token_id, set()):
            self._remove(key)

    def invalidate_user(self, user_id: uuid.UUID) -> None:
        self.generation += 1
        for key in self._by_user.pop(user_id, set()):
            self._remove(key)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_token.clear()
        self._by_user.clear()

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for index, owner in (
            (self._by_token, entry.token_id),
            (self._by_user, entry.user_id),
        ):
            if owner is None:
                continue
            keys = index.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[owner]
