from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.tokens.cache import ValidationCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def make_cache(
    max_age: float = 60, negative: float = 10, entries: int = 100
) -> tuple[ValidationCache[str], FakeMonotonic]:
    clock = FakeMonotonic()
    cache: ValidationCache[str] = ValidationCache(max_age, negative, entries, clock)
    cache.enable()
    return cache, clock


def test_disabled_cache_stores_nothing() -> None:
    cache, _ = make_cache()
    cache.disable()

    cache.put(b"k", "valid", cache.generation, positive=True)

    assert cache.get(b"k", NOW) is None


def test_zero_max_age_never_enables() -> None:
    cache: ValidationCache[str] = ValidationCache(0, 10, 100)
    cache.enable()

    assert not cache.enabled


def test_positive_entry_ages_out() -> None:
    cache, clock = make_cache()
    cache.put(b"k", "valid", cache.generation, positive=True)

    clock.seconds += 59
    fresh = cache.get(b"k", NOW)
    clock.seconds += 1
    stale = cache.get(b"k", NOW)

    assert fresh == "valid"
    assert stale is None


def test_negative_entry_has_shorter_age() -> None:
    cache, clock = make_cache()
    cache.put(b"k", "unknown", cache.generation, positive=False)

    clock.seconds += 10

    assert cache.get(b"k", NOW) is None


def test_entry_never_outlives_token_expiry() -> None:
    cache, _ = make_cache()
    expires_at = NOW + timedelta(seconds=5)
    cache.put(b"k", "valid", cache.generation, positive=True, expires_at=expires_at)

    before = cache.get(b"k", expires_at - timedelta(microseconds=1))
    at_expiry = cache.get(b"k", expires_at)

    assert before == "valid"
    assert at_expiry is None


def test_invalidate_by_token_and_user() -> None:
    cache, _ = make_cache()
    token_a, token_b, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(
        b"a", "A", cache.generation, positive=True, token_id=token_a, user_id=user
    )
    cache.put(
        b"b", "B", cache.generation, positive=True, token_id=token_b, user_id=user
    )
    cache.put(b"c", "C", cache.generation, positive=True, user_id=uuid.uuid4())

    cache.invalidate_token(token_a)
    after_token = (cache.get(b"a", NOW), cache.get(b"b", NOW))
    cache.invalidate_user(user)
    after_user = (cache.get(b"b", NOW), cache.get(b"c", NOW))

    assert after_token == (None, "B")
    assert after_user == (None, "C")


def test_lookup_older_than_invalidation_not_stored() -> None:
    cache, _ = make_cache()
    token = uuid.uuid4()
    generation = cache.generation

    cache.invalidate_token(token)
    cache.put(b"k", "valid", generation, positive=True, token_id=token)

    assert cache.get(b"k", NOW) is None
    assert len(cache) == 0


def test_clear_drops_everything() -> None:
    cache, _ = make_cache()
    cache.put(b"a", "A", cache.generation, positive=True)
    cache.put(b"b", "B", cache.generation, positive=False)

    cache.clear()

    assert len(cache) == 0


def test_size_bound_evicts_least_recently_used() -> None:
    cache, _ = make_cache(entries=2)
    cache.put(b"a", "A", cache.generation, positive=True, token_id=uuid.uuid4())
    cache.put(b"b", "B", cache.generation, positive=True)
    cache.get(b"a", NOW)

    cache.put(b"c", "C", cache.generation, positive=True)

    assert cache.get(b"b", NOW) is None
    assert cache.get(b"a", NOW) == "A"
    assert cache.get(b"c", NOW) == "C"
    assert len(cache) == 2
