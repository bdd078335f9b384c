"""The keep-alive client of the credential checks, against a local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.common.http import HttpError, KeepAliveClient

Reply = Callable[[bytes], bytes]


class Server:
    """A local server that replies ``reply(head)`` to each request head."""

    def __init__(self, reply: Reply, close_after: bool = False) -> None:
        self.reply = reply
        self.close_after = close_after
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(self.reply(head))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Start = Callable[["Server"], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> str:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listener)
        port = listener.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for listener in servers:
        listener.close()


def fixed(body: bytes, extra: str = "") -> Reply:
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return lambda _: head.encode() + body


async def test_reuses_connection(serve: Start) -> None:
    server = Server(fixed(b'{"ok": true}', "WWW-Authenticate: Bearer\r\n"))
    url = await serve(server)
    client = KeepAliveClient()
    for _ in range(3):
        response = await client.get(f"{url}/v1/x?a=1", {"Authorization": "Bearer t"})
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert response.headers["www-authenticate"] == "Bearer"
    await client.aclose()
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /v1/x?a=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in server.heads[0]


async def test_reads_chunked_body(
    serve: Start,
) -> None:
    chunked = (
        b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3;x=y\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
    )
    url = await serve(Server(lambda _: chunked))
    client = KeepAliveClient()
    response = await client.get(url, {})
    second = await client.get(url, {})
    await client.aclose()
    assert response.status_code == 401
    assert response.json() == {"a": 1}
    assert second.json() == {"a": 1}


async def test_connection_close_not_reused(
    serve: Start,
) -> None:
    server = Server(fixed(b"{}", "Connection: close\r\n"), close_after=True)
    url = await serve(server)
    client = KeepAliveClient()
    await client.get(url, {})
    await client.get(url, {})
    await client.aclose()
    assert server.connections == 2


async def test_retries_after_server_closed_idle(
    serve: Start,
) -> None:
    server = Server(fixed(b"{}"))
    url = await serve(server)
    client = KeepAliveClient()
    await client.get(url, {})
    # The server drops the idle connection, as uvicorn does after 5 s.
    server.writers[0].close()
    await asyncio.sleep(0.05)
    response = await client.get(url, {})
    await client.aclose()
    assert response.status_code == 200
    assert server.connections == 2


async def test_timeout_raises_http_error(
    serve: Start,
) -> None:
    # A head without its blank line: the client waits for the rest.
    url = await serve(Server(lambda _: b"HTTP/1.1 200 OK\r\n"))
    client = KeepAliveClient(timeout=0.2)
    with pytest.raises(HttpError, match="timed out"):
        await client.get(url, {})
    await client.aclose()


async def test_refused_connection_raises_http_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    client = KeepAliveClient()
    with pytest.raises(HttpError, match="failed"):
        await client.get(f"http://127.0.0.1:{port}/", {})


async def test_malformed_status_raises_http_error(
    serve: Start,
) -> None:
    url = await serve(Server(lambda _: b"SMTP ready\r\n\r\n"))
    client = KeepAliveClient()
    with pytest.raises(HttpError, match="invalid status line"):
        await client.get(url, {})
    await client.aclose()


async def test_header_with_newline_rejected() -> None:
    client = KeepAliveClient()
    with pytest.raises(ValueError, match="invalid character"):
        await client.get("http://127.0.0.1:9/", {"X-Forwarded-For": "a\r\nb: c"})
