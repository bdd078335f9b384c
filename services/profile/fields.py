"""Validated field types of the profile API."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from services.common.text import check_printable

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,38}$"
EMAIL_PATTERN = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
)
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_time_zone(name: str) -> str:
    if name not in _time_zones():
        raise ValueError("must be an IANA time zone name such as Europe/Berlin")
    return name


def _check_email(address: str) -> str:
    if not EMAIL_PATTERN.match(address):
        raise ValueError("must be an email address such as ada@example.org")
    return address


Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=USERNAME_PATTERN),
]
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(check_printable),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    AfterValidator(check_printable),
    AfterValidator(_check_email),
]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_check_time_zone)]
Password = Annotated[
    str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
]
