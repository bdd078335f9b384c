"""The dedupe key and Message-ID local part of a token's expiry email."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from services.notifier.emails import EXPIRED, EXPIRING, token_email_key

TOKEN = uuid.UUID("11111111-2222-4333-8444-555555555555")
EXPIRES_AT = datetime(2027, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


def test_key_holds_kind_token_and_microseconds() -> None:
    key = token_email_key(EXPIRED, TOKEN, EXPIRES_AT)

    assert key == f"token-expired.{TOKEN}.1798761600500000"


def test_key_changes_with_expiry() -> None:
    later = EXPIRES_AT + timedelta(days=9)

    assert token_email_key(EXPIRING, TOKEN, EXPIRES_AT) != token_email_key(
        EXPIRING, TOKEN, later
    )


def test_offset_does_not_change_key() -> None:
    sydney = EXPIRES_AT.astimezone(timezone(timedelta(hours=11)))

    assert token_email_key(EXPIRED, TOKEN, sydney) == token_email_key(
        EXPIRED, TOKEN, EXPIRES_AT
    )


def test_time_without_offset_is_utc() -> None:
    naive = EXPIRES_AT.replace(tzinfo=None)

    assert token_email_key(EXPIRED, TOKEN, naive) == token_email_key(
        EXPIRED, TOKEN, EXPIRES_AT
    )
