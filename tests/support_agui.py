"""AG-UI in tests: read an AG-UI event stream, validate every event with the ``ag-ui-protocol``
package's own models, and check the order the protocol requires."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from ag_ui.core import Event
from pydantic import TypeAdapter

from support_sse import sse_messages

TIMEOUT = 20.0
EVENT = TypeAdapter(Event)


@dataclass
class Agui:
    """One AG-UI event as it arrived: its SSE ``id`` (None when it had none) and its JSON."""

    id: int | None
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event["type"])


def validate(doc: dict[str, Any]) -> None:
    """``doc`` is a valid AG-UI event: the package's model accepts it, keeps no unknown
    field, and writes it back exactly as it was sent."""
    model = EVENT.validate_python(doc)
    assert not model.model_extra, f"fields AG-UI does not know: {model.model_extra} in {doc}"
    assert model.model_dump(mode="json", by_alias=True) == doc, doc


async def read_agui(response: httpx.Response) -> list[Agui]:
    """Every AG-UI event of a stream, validated; each message is `data:` (and maybe `id:`)."""
    out: list[Agui] = []
    async for message in sse_messages(response):
        assert set(message) <= {"id", "data"}, message
        doc = orjson.loads(message["data"])
        validate(doc)
        out.append(Agui(int(message["id"]) if "id" in message else None, doc))
    return out


def run_input(
    text: str | None = "hello", *, thread_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A RunAgentInput with one user message (or none)."""
    messages = [] if text is None else [{"id": "m-1", "role": "user", "content": text}]
    return {
        "threadId": thread_id or f"agui-thread-{uuid.uuid4().hex[:8]}",
        "runId": f"agui-run-{uuid.uuid4().hex[:8]}",
        "messages": messages,
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


async def post_agui(
    http: httpx.AsyncClient, agent: str, body: Any, **kwargs: Any
) -> tuple[int, list[Agui], bytes]:
    """POST /v1/ag-ui/{agent}: (status, the AG-UI events, the error body)."""
    async with asyncio.timeout(TIMEOUT):
        async with http.stream("POST", f"/v1/ag-ui/{agent}", json=body, **kwargs) as response:
            if response.status_code != 200:
                return response.status_code, [], await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            return 200, await read_agui(response), b""


async def get_agui(
    http: httpx.AsyncClient, run_id: str, *, params: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[int, list[Agui], bytes]:
    """GET /v1/runs/{id}/stream?format=ag-ui (and ``params``)."""
    params = {"format": "ag-ui", **(params or {})}
    async with asyncio.timeout(TIMEOUT):
        async with http.stream(
            "GET", f"/v1/runs/{run_id}/stream", params=params, **kwargs
        ) as response:
            if response.status_code != 200:
                return response.status_code, [], await response.aread()
            return 200, await read_agui(response), b""


def check_order(events: list[Agui], *, opened: bool = True, open_text: str | None = None) -> None:
    """The protocol's order: RUN_STARTED first (when ``opened``; a resumed stream may start
    inside the text message ``open_text``), RUN_FINISHED or RUN_ERROR last and only there;
    text messages and tool calls start, go on and end in order; every tool result answers a
    call that ended; ``id``s grow."""
    types = [a.type for a in events]
    if opened:
        assert types[0] == "RUN_STARTED", types
        assert types.count("RUN_STARTED") == 1, types
    assert types[-1] in ("RUN_FINISHED", "RUN_ERROR"), types
    assert sum(t in ("RUN_FINISHED", "RUN_ERROR") for t in types) == 1, types
    open_call: str | None = None
    ended_calls: set[str] = set()
    for a in events:
        e = a.event
        if a.type == "TEXT_MESSAGE_START":
            assert open_text is None, types
            open_text = e["messageId"]
        elif a.type in ("TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"):
            assert e["messageId"] == open_text, (e, open_text)
            if a.type == "TEXT_MESSAGE_END":
                open_text = None
        elif a.type == "TOOL_CALL_START":
            assert open_call is None, types
            open_call = e["toolCallId"]
        elif a.type in ("TOOL_CALL_ARGS", "TOOL_CALL_END"):
            assert e["toolCallId"] == open_call, (e, open_call)
            if a.type == "TOOL_CALL_END":
                ended_calls.add(e["toolCallId"])
                open_call = None
        elif a.type == "TOOL_CALL_RESULT":
            assert e["toolCallId"] in ended_calls, e
    assert open_text is None, "a text message was never ended"
    assert open_call is None, "a tool call was never ended"
    ids = [a.id for a in events if a.id is not None]
    assert ids == sorted(ids), ids
    assert len(ids) == len(set(ids)), ids


def by_seq(events: list[Agui]) -> dict[int, list[dict[str, Any]]]:
    """The AG-UI events made from each corral event: those up to and including its ``id``."""
    groups: dict[int, list[dict[str, Any]]] = {}
    pending: list[dict[str, Any]] = []
    for a in events:
        pending.append(a.event)
        if a.id is not None:
            groups[a.id] = pending
            pending = []
    return groups
