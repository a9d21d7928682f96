"""Per-user secrets (contract §2, §4) through ``corral serve --secrets``: the agent and its tools
use the real value, and no stored or delivered byte holds it.

The agents and the resolver are a module written to disk, loaded by a real ``corral serve``
child process. A tool echoes the secret in its result and in its error message, the agent
streams it split across ``text_delta`` and ``answer_delta`` deltas, logs it, thinks it and
returns it. Then every byte is searched: the SQLite file (or every PostgreSQL row), the
WebSocket frames, the SSE stream, the HTTP answers and the server's log.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from sqlalchemy.engine import make_url

from support import ServerProcess, check_run_events, spawn_server
from support_identity import write_module

pytestmark = pytest.mark.slow

TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
MASK = "[REDACTED]"
SENTENCE = "Your key is {key}, keep it safe."

AGENTS = """
import hashlib
import logging

from pydantic import BaseModel

import corral
from corral import AgentRegistry, RunContext

registry = AgentRegistry()
log = logging.getLogger("team.agents")
SECRETS = {("alice", "API_KEY"): "%(alice)s", ("bob", "API_KEY"): "%(bob)s"}


async def resolve(identity: corral.Identity, name: str) -> str | None:
    return SECRETS.get((identity.user_id, name))


@registry.tool(description="Echoes the caller's key")
async def echo_key(ctx: RunContext, note: str) -> dict:
    key = await ctx.secret("API_KEY")
    return {"echo": f"{note}: {key}", "nested": [key, {"k": key}]}


@registry.tool()
async def fail_with_key(ctx: RunContext) -> None:
    key = await ctx.secret("API_KEY")
    raise RuntimeError(f"upstream refused {key}")


@registry.tool()
async def session_info() -> dict:
    return {"session_id": "S-123", "token_count": 42}


class Nothing(BaseModel):
    pass


@registry.agent("leaky", input_model=Nothing)
async def leaky(ctx: RunContext, _input: Nothing) -> dict:
    key = await ctx.secret("API_KEY")
    missing = await ctx.secret("NOT_THERE")
    echoed = await ctx.tools.call("echo_key", note="the key")
    try:
        await ctx.tools.call("fail_with_key")
    except corral.ToolCallError as exc:
        failure = exc.message
    info = await ctx.tools.call("session_info")
    log.warning("calling the upstream with %%s", key)
    text = "%(sentence)s".format(key=key)
    for i in range(0, len(text), 7):
        await ctx.update("text_delta", text=text[i : i + 7])
    for i in range(0, len(text), 5):
        await ctx.update("answer_delta", text=text[i : i + 5])
    await ctx.think(f"thinking about {key}")
    return {
        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
        "missing": missing,
        "echo_was_real": echoed == {"echo": f"the key: {key}", "nested": [key, {"k": key}]},
        "error_had_key": key in failure,
        "sid": info["session_id"],
        "count": info["token_count"],
        "answer": text,
    }


@registry.agent("fails", input_model=Nothing)
async def fails(ctx: RunContext, _input: Nothing) -> dict:
    key = await ctx.secret("API_KEY")
    raise RuntimeError(f"cannot use {key}")
"""


async def serve(
    tmp_path: Path, database_url: str, procs: list[ServerProcess], keys: dict[str, str]
) -> ServerProcess:
    folder = tmp_path / "agents"
    folder.mkdir()
    source = AGENTS % {"alice": keys["alice"], "bob": keys["bob"], "sentence": SENTENCE}
    module = write_module(folder, source, "secret_agents")
    proc = await asyncio.to_thread(
        spawn_server,
        tmp_path / "data",
        database_url,
        "--agents",
        module,
        "--secrets",
        f"{module}:resolve",
        PYTHONPATH=str(folder),
    )
    procs.append(proc)
    return proc


async def ws_runs(proc: ServerProcess, agents: list[str]) -> tuple[list[bytes], dict[str, list]]:
    """Start ``agents`` over one socket of alice's; every raw frame, and each run's events."""
    frames: list[bytes] = []
    events: dict[str, list[dict[str, Any]]] = {}
    async with websockets.connect(proc.ws_url, additional_headers=proc.headers("alice")) as ws:
        frames.append(await ws.recv(decode=False))
        for i, agent in enumerate(agents):
            start = {"type": "start_run", "agent": agent, "input": {}, "client_ref": f"c{i}"}
            await ws.send(orjson.dumps(start).decode())
        async with asyncio.timeout(30):
            while len(events) < len(agents) or not all(
                any(e["type"] in TERMINAL for e in evs) for evs in events.values()
            ):
                frame = await ws.recv(decode=False)
                frames.append(frame)
                doc = orjson.loads(frame)
                if doc["type"] == "run_accepted":
                    events.setdefault(doc["run"]["run_id"], [])
                elif "seq" in doc:
                    events.setdefault(doc["run_id"], []).append(doc)
    return frames, events


async def stored_bytes(tmp_path: Path, database_url: str) -> bytes:
    """Everything the database holds: the SQLite files, or every row of every table."""
    if database_url.startswith("sqlite"):
        db = tmp_path / "corral.db"
        return b"".join(p.read_bytes() for p in db.parent.glob("corral.db*"))
    import asyncpg

    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        dump = []
        for row in tables:
            rows = await conn.fetch(f'SELECT * FROM "{row["table_name"]}"')
            dump.append(repr([tuple(r) for r in rows]))
        return "\n".join(dump).encode()
    finally:
        await conn.close()


def of(events: list[dict[str, Any]], type_: str, **data: Any) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in events
        if e["type"] == type_ and all(e["data"].get(k) == v for k, v in data.items())
    ]


async def test_a_resolved_secret_is_used_for_real_and_never_stored_sent_or_logged(
    tmp_path: Path, database_url: str, server_processes: list[ServerProcess]
) -> None:
    keys = {u: f"sk-live-{u}-{secrets.token_hex(12)}" for u in ("alice", "bob")}
    key = keys["alice"]
    proc = await serve(tmp_path, database_url, server_processes, keys)
    frames, by_run = await ws_runs(proc, ["leaky", "fails"])
    leaky_id, fails_id = list(by_run)
    async with httpx.AsyncClient(base_url=proc.url, headers=proc.headers("alice")) as http:
        answers = [
            await http.get(path)
            for path in (
                f"/v1/runs/{leaky_id}",
                f"/v1/runs/{fails_id}",
                f"/v1/runs/{leaky_id}/events",
                f"/v1/runs/{fails_id}/events",
                "/v1/runs",
                f"/v1/runs/{leaky_id}/stream",
                f"/v1/runs/{fails_id}/stream",
            )
        ]
    leaky, fails = answers[0].json(), answers[1].json()
    events = by_run[leaky_id]
    check_run_events(events)

    # The agent and its tools had the real value.
    assert leaky["status"] == "succeeded", leaky
    out = leaky["output"]
    assert out["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert out["echo_was_real"] is True
    assert out["error_had_key"] is True
    assert out["missing"] is None
    # What was stored and sent shows the mask instead, everywhere it was.
    masked = SENTENCE.format(key=MASK)
    assert out["answer"] == masked
    for kind in ("text_delta", "answer_delta"):
        deltas = of(events, "agent_update", kind=kind)
        assert "".join(d["text"] for d in deltas) == masked, kind
        assert all(d["text"] for d in deltas)
    completed = {d["tool"]: d for d in of(events, "tool_completed")}
    assert completed["echo_key"]["result"] == {
        "echo": f"the key: {MASK}",
        "nested": [MASK, {"k": MASK}],
    }
    failed = completed["fail_with_key"]["error"]["message"]
    assert failed == f"RuntimeError: upstream refused {MASK}"
    assert of(events, "agent_thinking", text=f"thinking about {MASK}")
    assert fails["error"] == {"type": "agent_error", "message": f"RuntimeError: cannot use {MASK}"}
    proc.output.wait_for(f"calling the upstream with {MASK}")

    # And no byte anywhere holds the value: database, socket frames, HTTP and SSE, the log.
    everything = {
        "the database": await stored_bytes(tmp_path, database_url),
        "the WebSocket frames": b"\n".join(frames),
        "the HTTP answers": b"\n".join(a.content for a in answers),
        "the server's log": "".join(proc.output.lines).encode(),
    }
    for where, data in everything.items():
        assert key.encode() not in data, where
        assert keys["bob"].encode() not in data, where  # never resolved in alice's runs


async def test_a_tools_secret_looking_keys_are_masked_in_events_but_the_agent_gets_values(
    tmp_path: Path, database_url: str, server_processes: list[ServerProcess]
) -> None:
    """A tool returning {"session_id": "S-123", "token_count": 42}: its tool_completed event
    shows both under [REDACTED] (the keys look secret), and the agent got the real values."""
    keys = {u: f"sk-live-{u}-{secrets.token_hex(12)}" for u in ("alice", "bob")}
    proc = await serve(tmp_path, database_url, server_processes, keys)
    _frames, by_run = await ws_runs(proc, ["leaky"])
    (events,) = by_run.values()
    completed = {d["tool"]: d for d in of(events, "tool_completed")}
    assert completed["session_info"]["result"] == {"session_id": MASK, "token_count": MASK}
    output = of(events, "agent_completed")[0]["output"]
    assert (output["sid"], output["count"]) == ("S-123", 42)
