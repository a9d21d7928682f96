"""The cutting proxy the client tests run under: it forwards faithfully, then cuts on budget."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from cutting_proxy import Budgets, CuttingProxy

REPLY = bytes(range(256)) * 8  # 2048 bytes


class Upstream:
    """A TCP server that answers each line it reads with REPLY and keeps what it read."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self.received += line
                if line.endswith(b"\n"):
                    writer.write(REPLY)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.closed.set()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    yield up
    server.close()
    await server.wait_closed()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(4096):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_forwards_both_directions_unchanged_within_the_budget(upstream: Upstream) -> None:
    """Below its budget a connection carries every byte both ways, and is not counted as cut."""
    budgets = Budgets(short=0.0, long_range=(1_000_000, 1_000_000))
    async with CuttingProxy("127.0.0.1", upstream.port, seed=1, budgets=budgets) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for _ in range(3):
            writer.write(b"GET /v1/agents\r\n")
            assert await asyncio.wait_for(reader.readexactly(len(REPLY)), 5) == REPLY
        writer.close()
        await writer.wait_closed()
    assert upstream.received == b"GET /v1/agents\r\n" * 3
    assert proxy.connections == 1
    assert sum(proxy.cuts.values()) == 0


async def test_cuts_a_request_after_exactly_the_budget(upstream: Upstream) -> None:
    """A 150-byte request through a 100-byte budget: upstream gets 100 bytes, both sides EOF."""
    budgets = Budgets(short=0.0, long_range=(100, 100))
    async with CuttingProxy("127.0.0.1", upstream.port, seed=2, budgets=budgets) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST /v1/runs " + b"x" * 136)
        assert await asyncio.wait_for(read_to_end(reader), 5) == b""
        await asyncio.wait_for(upstream.closed.wait(), 5)
        writer.close()
    assert bytes(upstream.received) == (b"POST /v1/runs " + b"x" * 136)[:100]
    assert proxy.cuts == {"http": 1}


async def test_cuts_a_reply_midway_counting_both_directions(upstream: Upstream) -> None:
    """16 bytes up leave 84 of the 100-byte budget: the reply stops after 84 bytes, then EOF."""
    budgets = Budgets(short=0.0, long_range=(100, 100))
    async with CuttingProxy("127.0.0.1", upstream.port, seed=3, budgets=budgets) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /v1/ws HTTP\n")  # 16 bytes
        received = await asyncio.wait_for(read_to_end(reader), 5)
        writer.close()
    assert received == REPLY[:84]
    assert proxy.cuts == {"ws": 1}


def test_budgets_are_reproducible_from_the_seed() -> None:
    """The same seed draws the same budgets, short and long ones, within their ranges."""
    budgets = Budgets()
    rng_a, rng_b = random.Random(7), random.Random(7)
    a = [budgets.draw(rng_a) for _ in range(200)]
    assert a == [budgets.draw(rng_b) for _ in range(200)]
    short, long = budgets.short_range, budgets.long_range
    assert all(short[0] <= n <= short[1] or long[0] <= n <= long[1] for n in a)
    assert any(n < short[1] for n in a)
    assert any(n > short[1] for n in a)
