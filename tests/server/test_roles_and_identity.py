"""Roles gate agents, and agents see who they act for (contract §2), through a real server.

An agent registered with ``roles={...}`` exists only for users holding one of them: to anyone
else it is absent from ``GET /v1/agents`` and starting it (HTTP or WebSocket) is the 404 of an
unknown agent. ``ctx.identity`` carries the user id, roles and claims of the sign-in that
started the run; the claims never reach an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from pydantic import BaseModel

from corral import AgentRegistry, RunContext
from corral.agents import echo
from support_identity import MODES, StartSigned, write_module

TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
TIMEOUT = 10.0


class Nothing(BaseModel):
    pass


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def identity_registry() -> AgentRegistry:
    """echo, a ``whoami`` agent reporting ``ctx.identity``, and ``ledger`` gated by roles."""
    registry = AgentRegistry()
    echo.register(registry)

    @registry.agent("whoami", input_model=Nothing, description="Who am I acting for?")
    async def whoami(ctx: RunContext, _input: Nothing) -> dict[str, Any]:
        identity = ctx.identity
        team = identity.claims.get("team")
        return {
            "user_id": identity.user_id,
            "same_user": identity.user_id == ctx.user_id,
            "roles": sorted(identity.roles),
            # The claim's hash, never the claim: the output is an event too.
            "team_sha256": sha(team) if isinstance(team, str) else None,
            "claims_read_only": _read_only(identity.claims),
        }

    @registry.agent("ledger", input_model=Nothing, roles={"analyst", "auditor"})
    async def ledger(ctx: RunContext, _input: Nothing) -> dict[str, Any]:
        return {"for": ctx.identity.user_id, "roles": sorted(ctx.identity.roles)}

    return registry


def _read_only(claims: Any) -> bool:
    try:
        claims["injected"] = True
    except TypeError:
        return True
    return False


async def finish(http: httpx.AsyncClient, run_id: str) -> tuple[dict[str, Any], str]:
    """The run once its stream ended, and the stream's raw text."""
    async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
        body = (await stream.aread()).decode()
    return (await http.get(f"/v1/runs/{run_id}")).json(), body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
async def test_a_gated_agent_is_listed_only_for_holders_of_one_of_its_roles(
    start_signed: StartSigned, mode: str
) -> None:
    """`GET /v1/agents` shows `ledger` (roles analyst, auditor) to an analyst only."""
    server = await start_signed(mode, identity_registry())
    listings: dict[str, list[str]] = {}
    for who, roles in {"none": [], "other": ["writer"], "analyst": ["analyst"]}.items():
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers("ann", roles=roles)
        ) as http:
            listings[who] = [a["name"] for a in (await http.get("/v1/agents")).json()]
    assert listings["none"] == listings["other"] == ["echo", "whoami"]
    assert listings["analyst"] == ["echo", "ledger", "whoami"]


async def test_starting_a_gated_agent_without_a_role_is_the_404_of_an_unknown_agent(
    start_signed: StartSigned,
) -> None:
    """Over HTTP and WebSocket, `ledger` without a role gets exactly the answer an agent
    that does not exist gets (only the name differs), and nothing is started."""
    server = await start_signed("secret", identity_registry())
    headers = server.headers("bo", roles=["writer"])
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        answers = {
            name: await http.post("/v1/runs", json={"agent": name, "input": {}})
            for name in ("ledger", "ledgex")
        }
        for resp in answers.values():
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "not_found"
        assert answers["ledger"].text == answers["ledgex"].text.replace("ledgex", "ledger")
        assert (
            answers["ledger"].headers["content-type"] == answers["ledgex"].headers["content-type"]
        )
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            ws_answers = {}
            for name in ("ledger", "ledgex"):
                start = {"type": "start_run", "agent": name, "input": {}, "client_ref": "c1"}
                await ws.send(orjson.dumps(start).decode())
                ws_answers[name] = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws_answers["ledger"] == ws_answers["ledgex"].replace("ledgex", "ledger")
            assert orjson.loads(ws_answers["ledger"])["code"] == "not_found"
        assert (await http.get("/v1/runs")).json()["runs"] == []


async def test_a_holder_of_one_role_starts_a_gated_agent_over_http_and_websocket(
    start_signed: StartSigned,
) -> None:
    """An auditor (one of the two roles) starts `ledger` both ways; it sees the roles."""
    server = await start_signed("secret", identity_registry())
    headers = server.headers("cy", roles=["auditor"])
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        run = await http.post("/v1/runs", json={"agent": "ledger", "input": {}})
        assert run.status_code == 202, run.text
        final, _ = await finish(http, run.json()["run_id"])
        assert final["output"] == {"for": "cy", "roles": ["auditor"]}
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            start = {"type": "start_run", "agent": "ledger", "input": {}, "client_ref": "c2"}
            await ws.send(orjson.dumps(start).decode())
            accepted = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert accepted["type"] == "run_accepted", accepted
            while (event := orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))[
                "type"
            ] not in TERMINAL:
                pass
            assert event["data"]["output"] == {"for": "cy", "roles": ["auditor"]}


@pytest.mark.parametrize("mode", MODES)
async def test_ctx_identity_reaches_the_agent_and_its_claims_never_reach_an_event(
    start_signed: StartSigned, mode: str
) -> None:
    """The agent sees the user id, roles and claims (read-only) of the sign-in that started
    the run; the claim's value is in no stored event, no delivered frame, no run object."""
    server = await start_signed(mode, identity_registry())
    team = "blue-dee"  # the `team` claim: in the JWT payload, or the hook's claims
    headers = server.headers("dee", roles=["analyst"], team=team)
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        run = (await http.post("/v1/runs", json={"agent": "whoami", "input": {}})).json()
        final, streamed = await finish(http, run["run_id"])
        stored = (await http.get(f"/v1/runs/{run['run_id']}/events")).text
    assert final["status"] == "succeeded", final
    assert final["output"] == {
        "user_id": "dee",
        "same_user": True,
        "roles": ["analyst"],
        "team_sha256": sha(team),
        "claims_read_only": True,
    }
    for text in (streamed, stored, orjson.dumps(final).decode()):
        assert team not in text


ODD_HOOK = """
import corral


class Opaque:
    pass


async def authenticate(request):
    if request.token == "odd-token":
        return corral.Identity("odd", roles={"analyst"}, claims={"obj": Opaque(), "n": 1})
    return None
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_hook_identity_whose_claims_are_not_json_still_runs_without_them(
    start_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Claims that cannot be stored (a Python object) are dropped with a log line; the run is
    stored and runs with the user and roles."""
    module = write_module(tmp_path, ODD_HOOK, "odd_hook")
    try:
        server = await start_server(identity_registry(), auth=f"{module}:authenticate")
        headers = {"Authorization": "Bearer odd-token"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            run = await http.post("/v1/runs", json={"agent": "whoami", "input": {}})
            assert run.status_code == 202, run.text
            final, _ = await finish(http, run.json()["run_id"])
    finally:
        sys.modules.pop(module, None)
        sys.path.remove(str(tmp_path))
    assert final["status"] == "succeeded", final
    assert final["output"]["user_id"] == "odd"
    assert final["output"]["roles"] == ["analyst"]
    assert final["output"]["team_sha256"] is None
    assert "claims are not JSON" in caplog.text
