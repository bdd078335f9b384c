"""The clock that every expiry decision of the tokens service reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time in UTC, plus an offset that only development can set.

    The offset is stored in the database so that replicas share it; each
    replica reloads it every second (``TokenService.refresh_clock``).
    """

    def __init__(self, adjustable: bool) -> None:
        self._adjustable = adjustable
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def adjustable(self) -> bool:
        return self._adjustable

    @property
    def offset(self) -> timedelta:
        return self._offset

    def advance(self, by: timedelta) -> datetime:
        self.set_offset(self._offset + by)
        return self.now()

    def set_offset(self, offset: timedelta) -> None:
        if not self._adjustable:
            raise PermissionError("the clock can be moved only in development")
        self._offset = offset
