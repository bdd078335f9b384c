"""Per-address limit on failed token validations, kept in memory per process.

Each tokens replica counts only the failures it handles itself, so behind a load
balancer that spreads one address over R replicas, that address gets up to
R times the configured number of failures per window
(docs/decisions/validation-failure-limit.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_ADDRESSES = 100_000


class FailureLimiter:
    """Counts failed validations per client address in a sliding time window.

    Once an address has ``max_failures`` failures younger than
    ``window_seconds``, ``retry_after`` returns the seconds until the oldest
    of them leaves the window. At most ``max_addresses`` addresses are
    tracked: beyond that the address whose last failure is oldest is dropped.
    """

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {max_failures}")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_addresses = max_addresses
        self._clock = clock
        # Least recently failed address first, so eviction pops from the front.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.rejected = 0

    def retry_after(self, address: str | None) -> int | None:
        """Return whole seconds to wait if ``address`` is over the limit, else None."""
        if address is None:
            return None
        failures = self._failures.get(address)
        if failures is None or len(failures) < self._max_failures:
            return None
        remaining = failures[0] + self._window - self._clock()
        if remaining <= 0:
            return None
        self.rejected += 1
        return max(1, math.ceil(remaining))

    def record_failure(self, address: str | None) -> None:
        if address is None:
            return
        failures = self._failures.get(address)
        if failures is None:
            failures = deque(maxlen=self._max_failures)
            self._failures[address] = failures
            if len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        failures.append(self._clock())
        if len(failures) == self._max_failures:
            # Rejected requests record no failure, so this logs at most
            # max_failures times per window and address, and usually once.
            log.warning(
                "client %s reached %d failed token validations within %g s;"
                " rejecting its tokens until the oldest failure is older",
                address,
                self._max_failures,
                self._window,
            )

    @property
    def addresses(self) -> int:
        return len(self._failures)
