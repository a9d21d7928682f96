"""WebSocket helpers of the server tests: a signed-in socket, the next message, a start_run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import websockets

from conftest import LiveServer

TIMEOUT = 20.0


async def recv(ws: Any) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def recv_type(ws: Any, *types: str) -> dict[str, Any]:
    """The next message of one of ``types`` (events of runs in between are skipped)."""
    while True:
        message = await recv(ws)
        if message["type"] in types:
            return message


@contextlib.asynccontextmanager
async def socket_of(server: LiveServer, user: str) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "ready"
        yield ws


class Raw(str):
    """JSON text to put in a message as it is (orjson cannot write 300 levels of nesting)."""


def start(ref: Any, message: str = "hello", steps: int = 1) -> bytes:
    doc = {"type": "start_run", "agent": "echo", "input": {"message": message, "steps": steps}}
    if isinstance(ref, Raw):
        return orjson.dumps(doc)[:-1] + b', "client_ref": ' + ref.encode() + b"}"
    if ref is not ...:
        doc["client_ref"] = ref
    return orjson.dumps(doc)
