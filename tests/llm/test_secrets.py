"""The ``chat`` agent and a per-user secret (contract §2, §4): a tool resolves the user's key,
the model gets the real value, and the model's answer — which repeats it split across
streamed text deltas — is stored and delivered with the key masked."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from corral import RunContext
from support_identity import write_module

from .conftest import chat_registry, deltas, llm_settings, run_chat
from .servers import answer
from .test_trouble import Scripted, tool_call

MASK = "[REDACTED]"


def sqlite_bytes(folder: Path) -> bytes:
    """The SQLite database file and its WAL, as stored."""
    return b"".join(p.read_bytes() for p in folder.glob("corral.db*"))


async def test_a_secret_split_across_text_deltas_is_masked_while_the_model_saw_it(
    start_server, scripted: Scripted, tmp_path: Path
) -> None:
    key = f"sk-{secrets.token_hex(10)}"
    resolver = write_module(
        tmp_path,
        "async def resolve(identity, name):\n"
        f"    return {key!r} if (identity.user_id, name) == ('ann', 'API_KEY') else None\n",
        "chat_secrets",
    )
    head, tail = key[:7], key[7:]
    model, url = await scripted(
        tool_call("lookup_key", "{}"),
        answer("Your key ", f"is {head}", f"{tail[:5]}", f"{tail[5:]}. Keep it."),
    )
    registry = chat_registry(llm_settings(url, tools=("lookup_key",)))

    @registry.tool(description="The caller's API key")
    async def lookup_key(ctx: RunContext) -> dict[str, str | None]:
        return {"key": await ctx.secret("API_KEY")}

    server = await start_server(registry=registry, secrets=f"{resolver}:resolve")
    async with server.client("ann") as client:
        run, events = await run_chat(client, "what is my key?")
        stored = (await client.get(f"/v1/runs/{run['run_id']}/events")).text
    assert run["status"] == "succeeded", run
    # The model was sent the real key in the tool result: the agent used the value.
    tool_message = model.requests[1].messages[-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"key": key}
    # What corral stored and streamed has the mask, in the deltas as in the answer.
    masked = f"Your key is {MASK}. Keep it."
    assert run["output"]["answer"] == masked
    assert "".join(deltas(events)) == masked
    assert key not in json.dumps(events)
    assert key not in stored
    assert key[:7] not in "".join(deltas(events))
    assert key.encode() not in sqlite_bytes(tmp_path)
