"""The text of each email the notifier sends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXPIRING = "token-expiring"
EXPIRED = "token-expired"
PASSWORD_CHANGED = "password-changed"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def token_email_key(kind: str, token_id: uuid.UUID | str, expires_at: datetime) -> str:
    """Return the dedupe key of a token's expiry email, which is also the
    local part of its Message-ID: one email per kind, token and expiry.

    A rotated token has a new expiry, so it is warned again. The database
    builds the same key for a batch (``INSERT_TOKEN_REQUESTS``).
    """
    if expires_at.tzinfo is None:
        # The database reads a time without an offset as UTC.
        expires_at = expires_at.replace(tzinfo=UTC)
    microseconds = (expires_at - _EPOCH) // timedelta(microseconds=1)
    return f"{kind}.{token_id}.{microseconds}"


def local_time(instant: datetime, time_zone: str) -> str:
    """Format ``instant`` in the person's time zone, naming the zone."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone, time_zone = ZoneInfo("UTC"), "UTC"
    local = instant.astimezone(zone)
    return f"{local:%A %d %B %Y, %H:%M} {local.tzname()} ({time_zone})"


def compose_password_changed(
    *,
    sender: str,
    recipient: str,
    display_name: str,
    time_zone: str,
    changed_at: datetime,
    message_id: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Message-ID"] = message_id
    message["Subject"] = "Your password was changed"
    when = local_time(changed_at, time_zone)
    message.set_content(
        f"Hello {display_name},\n\n"
        f"the password of your account was changed on {when}.\n"
        "Your other sign-in sessions were ended. If you did not change it, "
        "contact an administrator at once.\n"
    )
    return message


def compose(
    kind: str,
    *,
    sender: str,
    recipient: str,
    display_name: str,
    time_zone: str,
    token_name: str,
    expires_at: datetime,
    message_id: str,
) -> EmailMessage:
    when = local_time(expires_at, time_zone)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Message-ID"] = message_id
    if kind == EXPIRING:
        message["Subject"] = f'Your personal access token "{token_name}" expires soon'
        body = (
            f"Hello {display_name},\n\n"
            f'your personal access token "{token_name}" expires on {when}.\n'
            "Applications that use it will be refused from then on. Create a new "
            "token and give it to them before that time.\n"
        )
    else:
        message["Subject"] = f'Your personal access token "{token_name}" has expired'
        body = (
            f"Hello {display_name},\n\n"
            f'your personal access token "{token_name}" expired on {when}.\n'
            "Applications that still use it are refused. Create a new token if "
            "they still need access.\n"
        )
    message.set_content(body)
    return message
