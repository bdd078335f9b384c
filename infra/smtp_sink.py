"""SMTP server that stores every message it receives and delivers nothing.

Run as ``python -m infra.smtp_sink --port 11025 --dir .run/smtp``. Each message
is written to ``<dir>/messages/<name>.eml`` and then appended as one JSON line
to ``<dir>/messages.jsonl`` (see `infra.mailbox` for the reader). Any AUTH
login is accepted, so services configured with SMTP credentials can send too.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import ipaddress
import json
import logging
import os
import signal
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

logger = logging.getLogger("infra.smtp_sink")


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    # A long header is folded onto a continuation line; unfold it.
    return None if value is None else " ".join(str(value).split())


def _text_body(message: EmailMessage, subtype: str) -> str | None:
    """Return the decoded body of the preferred text/<subtype> part, if any."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        # Unknown or wrong charset: decode the raw payload leniently.
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        content = raw.decode("utf-8", errors="replace")
    if not isinstance(content, str):
        return ""
    return content.replace("\r\n", "\n")


def build_record(
    content: bytes,
    *,
    mail_from: str | None,
    rcpt_tos: list[str],
    received_at: datetime,
    eml_path: Path,
) -> dict[str, Any]:
    """Describe one received message as a JSON-serialisable dict.

    `text` is the decoded text/plain body ("" when the message has none) and
    `html` the text/html body or None, both with CRLF line ends turned into LF.
    For a header that occurs more than once, `headers` keeps its first value.
    """
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    headers: dict[str, str] = {}
    for name, value in message.items():
        headers.setdefault(name, str(value))
    return {
        "received_at": received_at.isoformat(),
        "mail_from": mail_from,
        "rcpt_tos": list(rcpt_tos),
        "message_id": _header(message, "Message-ID"),
        "subject": _header(message, "Subject"),
        "to": _header(message, "To"),
        "from": _header(message, "From"),
        "text": _text_body(message, "plain") or "",
        "html": _text_body(message, "html"),
        "headers": headers,
        "eml_path": str(eml_path),
    }


class MailStore:
    """Writes received messages as .eml files and JSON Lines records."""

    def __init__(self, directory: Path) -> None:
        self.messages_dir = directory / "messages"
        self.jsonl_path = directory / "messages.jsonl"
        self.messages_dir.mkdir(parents=True, exist_ok=True)

    def store(
        self, content: bytes, mail_from: str | None, rcpt_tos: list[str]
    ) -> dict[str, Any]:
        received_at = datetime.now(UTC)
        name = f"{received_at:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.eml"
        eml_path = self.messages_dir / name

        # Write under a hidden name and rename, so the .eml file appears whole.
        temporary = self.messages_dir / f".{name}.tmp"
        temporary.write_bytes(content)
        os.replace(temporary, eml_path)

        record = build_record(
            content,
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            received_at=received_at,
            eml_path=eml_path,
        )
        self._append_line(json.dumps(record, ensure_ascii=False) + "\n")
        return record

    def _append_line(self, line: str) -> None:
        """Append `line` with one O_APPEND write.

        Readers skip a last line that has no newline yet, so they never parse
        a record that is still being written.
        """
        data = line.encode("utf-8")
        descriptor = os.open(
            self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        try:
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
        finally:
            os.close(descriptor)


class SinkHandler:
    """aiosmtpd handler that stores each message through a MailStore."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        try:
            record = self.store.store(
                content, envelope.mail_from, list(envelope.rcpt_tos)
            )
        except Exception:
            logger.exception(
                "storing message from %s to %s failed",
                envelope.mail_from,
                envelope.rcpt_tos,
            )
            return "451 Requested action aborted: error in processing"
        logger.info(
            "stored message %s from %s to %s: %r",
            record["message_id"],
            envelope.mail_from,
            envelope.rcpt_tos,
            record["subject"],
        )
        return "250 Message accepted for delivery"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True)


async def serve(host: str, port: int, directory: Path) -> None:
    """Serve SMTP on host:port until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = SinkHandler(MailStore(directory))

    def make_protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            ident="pat-smtp-sink",
            authenticator=_accept_any_login,
            auth_require_tls=False,
            loop=loop,
        )

    server = await loop.create_server(make_protocol, host=host, port=port)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    logger.info("listening on %s:%d, storing messages in %s", host, port, directory)
    try:
        await stopped.wait()
    finally:
        server.close()
        await server.wait_closed()
        logger.info("stopped")


def _loopback_host(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid IP address: {value!r}") from error
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"{value} is not a loopback address")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--host",
        type=_loopback_host,
        default="127.0.0.1",
        help="loopback address to bind",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="folder for messages/ and messages.jsonl",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiosmtpd logs every SMTP command at INFO, including each readiness probe.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(arguments.host, arguments.port, arguments.dir.absolute()))


if __name__ == "__main__":
    main()
