"""A small HTTP/1.1 client for the credential checks between services.

Every request to a service that needs a session or a PAT makes one GET to
another service. httpx spent about 1.8 ms of CPU on each such GET on a
shared 2-core machine, against 0.08 ms for a plain asyncio exchange (both
measured with a local server that returns a fixed response), and that was a
quarter of the CPU of a token creation. This client does only what those
checks need: GET, keep-alive connections per origin, bodies with a
Content-Length or chunked, plain HTTP or TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_CONNECTIONS_PER_ORIGIN = 100
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """The request failed: no connection, a timeout or a malformed response."""


@dataclass(frozen=True)
class Response:
    status_code: int
    # Header names in lower case; a repeated header keeps its last value.
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class _Origin:
    host: str
    port: int
    tls: bool
    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS_PER_ORIGIN)
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(
        default_factory=list
    )


class KeepAliveClient:
    """Sends GET requests over reused HTTP/1.1 connections."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._ssl = ssl.create_default_context()

    async def get(self, url: str, headers: dict[str, str]) -> Response:
        """Send ``GET url``; raise ``HttpError`` if no complete response came
        within the timeout."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid URL {url!r}: expected http:// or https://")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(parts.hostname, port, tls)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        request = _encode(target, parts.netloc, headers)
        try:
            async with asyncio.timeout(self._timeout), origin.slots:
                return await self._exchange(origin, request)
        except TimeoutError as error:
            raise HttpError(f"GET {url} timed out after {self._timeout} s") from error
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            raise HttpError(f"GET {url} failed: {error!r}") from error

    async def _exchange(self, origin: _Origin, request: bytes) -> Response:
        while origin.idle:
            reader, writer = origin.idle.pop()
            try:
                return await self._send(origin, reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                # The server closed the idle connection (uvicorn does after
                # 5 s); a GET can be sent again on another one.
                continue
        reader, writer = await asyncio.open_connection(
            origin.host, origin.port, ssl=self._ssl if origin.tls else None
        )
        return await self._send(origin, reader, writer, request)

    @staticmethod
    async def _send(
        origin: _Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
    ) -> Response:
        try:
            writer.write(request)
            response, reusable = await _read_response(reader)
        except BaseException:
            # Includes the cancellation of a timeout: the connection may be
            # in the middle of a response, so it cannot be reused.
            writer.close()
            raise
        if reusable:
            origin.idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def aclose(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                _, writer = origin.idle.pop()
                writer.close()
        self._origins.clear()


def _encode(target: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if any(char in value for char in "\r\n\0"):
            raise ValueError(f"invalid character in the value of header {name}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """Read one response; return it and whether the connection can be reused."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as error:
        raise ValueError("the response head is too long") from error
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError("the response head is too long")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise ValueError(f"invalid status line {status_line[:100]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator:
            raise ValueError(f"invalid header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    reusable = (
        version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        content = await _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError(f"invalid Content-Length {length}")
        content = await reader.readexactly(length)
    else:
        # The body ends when the server closes the connection.
        content = await _read_to_end(reader)
        reusable = False
    return Response(int(rest[:3]), headers, content), reusable


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Skip any trailer fields up to the blank line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise ValueError("the response body is too long")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while chunk := await reader.read(65536):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("the response body is too long")
    return bytes(body)
