"""The sliding window of failed validations per address."""

from __future__ import annotations

import pytest

from services.tokens.failures import FailureLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_reached_after_max_failures() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(3, 10.0, clock=clock)

    for _ in range(2):
        limiter.record_failure("192.0.2.1")
    below = limiter.retry_after("192.0.2.1")
    limiter.record_failure("192.0.2.1")
    at_limit = limiter.retry_after("192.0.2.1")

    assert below is None
    assert at_limit == 10
    assert limiter.retry_after("192.0.2.2") is None


def test_window_slides_with_oldest_failure() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(2, 10.0, clock=clock)

    limiter.record_failure("192.0.2.1")
    clock.now += 4
    limiter.record_failure("192.0.2.1")
    clock.now += 3.5
    waiting = limiter.retry_after("192.0.2.1")
    clock.now += 3
    after_oldest = limiter.retry_after("192.0.2.1")

    assert waiting == 3
    assert after_oldest is None


def test_no_address_never_limited() -> None:
    limiter = FailureLimiter(1, 10.0, clock=FakeClock())

    limiter.record_failure(None)

    assert limiter.retry_after(None) is None
    assert limiter.addresses == 0


def test_oldest_address_evicted_when_full() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(1, 10.0, max_addresses=2, clock=clock)

    limiter.record_failure("192.0.2.1")
    limiter.record_failure("192.0.2.2")
    limiter.record_failure("192.0.2.1")
    limiter.record_failure("192.0.2.3")

    assert limiter.addresses == 2
    assert limiter.retry_after("192.0.2.1") == 10
    assert limiter.retry_after("192.0.2.2") is None
    assert limiter.retry_after("192.0.2.3") == 10


@pytest.mark.parametrize(("limit", "window"), [(0, 10.0), (3, 0.0)])
def test_invalid_settings_rejected(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(limit, window)
