"""Raw TCP clients for tests of what a server does with bytes that are not a proper request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key; the server only echoes a hash


@dataclass
class RawConnection:
    """One TCP connection to a server, read and written byte by byte."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_at: float = field(default_factory=time.monotonic)
    received: bytes = b""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until_closed(self, within: float) -> float:
        """Read until the server closes the connection (EOF or reset); the seconds since it
        was opened. ``TimeoutError`` when it is still open ``within`` seconds from now."""
        async with asyncio.timeout(within):
            try:
                while chunk := await self.reader.read(65536):
                    self.received += chunk
            except ConnectionError:
                pass
        return time.monotonic() - self.opened_at

    async def read_response(self, within: float = 10.0) -> Response:
        """One HTTP response with a ``content-length`` body (what corral's answers carry)."""
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
            response = Response.parse(head)
            length = int(response.headers.get("content-length", "0"))
            response.body = await self.reader.readexactly(length)
        return response

    async def read_frame(self, within: float = 10.0) -> tuple[int, bytes]:
        """One unmasked WebSocket frame from the server: (opcode, payload)."""
        async with asyncio.timeout(within):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @classmethod
    def parse(cls, head: bytes) -> Response:
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return cls(status, headers)

    def json(self) -> Any:
        return orjson.loads(self.body)


async def open_raw(url: str, source: str = "127.0.0.1") -> RawConnection:
    """A TCP connection to ``url``'s host and port from the local address ``source``."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port, local_addr=(source, 0)
    )
    return RawConnection(reader, writer)


@contextlib.asynccontextmanager
async def raw(url: str, source: str = "127.0.0.1") -> AsyncIterator[RawConnection]:
    """:func:`open_raw`, closed on the way out."""
    conn = await open_raw(url, source)
    try:
        yield conn
    finally:
        conn.close()


def request_head(
    path: str = "/healthz", host: str = "127.0.0.1", headers: tuple[str, ...] = ()
) -> bytes:
    """A GET request head (complete, with its blank line)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_head(
    path: str = "/v1/ws", host: str = "127.0.0.1", headers: tuple[str, ...] = ()
) -> bytes:
    """A WebSocket upgrade request head (complete, with its blank line)."""
    return request_head(
        path,
        host,
        (
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {WS_KEY}",
            "Sec-WebSocket-Version: 13",
            *headers,
        ),
    )


def host_of(url: str) -> str:
    """The ``host:port`` of a URL, as a client puts it in ``Host``."""
    return urlsplit(url).netloc
