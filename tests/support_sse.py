"""Reading Server-Sent Events in tests: messages as their fields, corral events checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The messages of an SSE body: fields of consecutive lines, up to a blank line.

    ``:`` lines are comments (keep-alives); several ``data:`` lines join with newlines.
    """
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value
    assert not fields, f"the stream ended inside a message: {fields}"


def event_of(message: dict[str, str]) -> dict[str, Any]:
    """The corral event a message carries, after checking its id and event fields match it."""
    event: dict[str, Any] = orjson.loads(message["data"])
    assert message["id"] == str(event["seq"]), message
    assert message["event"] == event["type"], message
    return event
