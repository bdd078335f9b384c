"""Read the messages that the local SMTP sink has received.

The sink appends one JSON object per message to ``messages.jsonl`` in its run
folder. The file keeps every message since the run folder was created, so a
test should match on something unique to it, such as a random token in the
subject or recipient.

    from infra import mailbox

    [message] = mailbox.wait_for_messages(lambda m: token in (m["subject"] or ""))
    assert "reset your password" in message["text"]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, cast

from infra import config

# Record written by infra/smtp_sink.py. "from" is a Python keyword, so the
# functional TypedDict syntax is needed.
MailMessage = TypedDict(
    "MailMessage",
    {
        "received_at": str,
        "mail_from": str | None,
        "rcpt_tos": list[str],
        "message_id": str | None,
        "subject": str | None,
        "to": str | None,
        "from": str | None,
        "text": str,
        "html": str | None,
        "headers": dict[str, str],
        "eml_path": str,
    },
)

Predicate = Callable[[MailMessage], bool]

# Lower bound on the polling interval, so waiting never spins on the file.
MIN_POLL_INTERVAL = 0.05


def default_mailbox_path() -> Path:
    """Return the messages.jsonl path for the current PAT_RUN_DIR."""
    return config.load().mailbox_path


def read_messages(path: Path | str | None = None) -> list[MailMessage]:
    """Return every stored message, oldest first; [] if the file does not exist.

    A last line without a newline is a record still being written and is left
    out. Raises ValueError for a complete line that is not a JSON object.
    """
    mailbox_path = Path(path) if path is not None else default_mailbox_path()
    try:
        data = mailbox_path.read_bytes()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    messages: list[MailMessage] = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(
                f"{mailbox_path}:{number} is not valid JSON: {error}"
            ) from error
        if not isinstance(record, dict):
            raise ValueError(f"{mailbox_path}:{number} is not a JSON object")
        messages.append(cast(MailMessage, record))
    return messages


def _matching(
    path: Path | str | None, predicate: Predicate | None
) -> list[MailMessage]:
    messages = read_messages(path)
    if predicate is None:
        return messages
    return [message for message in messages if predicate(message)]


def _timeout_error(
    found: int, count: int, timeout: float, path: Path | str | None
) -> TimeoutError:
    mailbox_path = path if path is not None else default_mailbox_path()
    return TimeoutError(
        f"expected {count} matching message(s) in {mailbox_path} within {timeout} s, "
        f"found {found}; check that the SMTP sink runs (python -m infra status smtp)"
    )


def wait_for_messages(
    predicate: Predicate | None = None,
    count: int = 1,
    timeout: float = 30.0,
    *,
    path: Path | str | None = None,
    poll_interval: float = 0.1,
) -> list[MailMessage]:
    """Poll the mailbox until at least `count` messages match `predicate`.

    Returns all matching messages, oldest first, which may be more than
    `count`. A predicate of None matches every message. Raises TimeoutError
    after `timeout` seconds. This blocks the calling thread; use
    `wait_for_messages_async` inside an event loop.
    """
    interval = max(poll_interval, MIN_POLL_INTERVAL)
    deadline = time.monotonic() + timeout
    while True:
        matches = _matching(path, predicate)
        if len(matches) >= count:
            return matches
        if time.monotonic() >= deadline:
            raise _timeout_error(len(matches), count, timeout, path)
        time.sleep(interval)


async def wait_for_messages_async(
    predicate: Predicate | None = None,
    count: int = 1,
    # Same signature as wait_for_messages, whose TimeoutError names the count found.
    timeout: float = 30.0,  # noqa: ASYNC109
    *,
    path: Path | str | None = None,
    poll_interval: float = 0.1,
) -> list[MailMessage]:
    """Same as `wait_for_messages`, but sleeps with asyncio between polls."""
    interval = max(poll_interval, MIN_POLL_INTERVAL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        matches = _matching(path, predicate)
        if len(matches) >= count:
            return matches
        if loop.time() >= deadline:
            raise _timeout_error(len(matches), count, timeout, path)
        await asyncio.sleep(interval)
