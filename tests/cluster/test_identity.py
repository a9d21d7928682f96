"""``ctx.identity`` on a worker of another node (contract §2): the identity a run was started
with travels with the run, through PostgreSQL, to the ``corral worker`` process executing it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import jwt
import pytest

from support_cluster import Cluster, user
from support_identity import write_module

pytestmark = pytest.mark.slow

AGENTS = """
import hashlib
import os

from pydantic import BaseModel

from corral import AgentRegistry, RunContext

registry = AgentRegistry()


class Nothing(BaseModel):
    pass


@registry.agent("whoami", input_model=Nothing)
async def whoami(ctx: RunContext, _input: Nothing) -> dict:
    identity = ctx.identity
    return {
        "pid": os.getpid(),
        "user_id": identity.user_id,
        "roles": sorted(identity.roles),
        "team_sha256": hashlib.sha256(identity.claims["team"].encode()).hexdigest(),
        "email_domain": identity.claims["email"].split("@")[1],
    }


@registry.agent("vault", input_model=Nothing, roles={"auditor"})
async def vault(ctx: RunContext, _input: Nothing) -> dict:
    return {"pid": os.getpid()}
"""


async def wait_finished(client: httpx.AsyncClient, run_id: str) -> dict:
    async with asyncio.timeout(45):
        while True:
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                return run
            await asyncio.sleep(0.1)


async def test_ctx_identity_reaches_an_agent_on_a_cluster_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An API-only node stores the run with its identity; the `corral worker` process (its
    agents from a test module given by --agents) gives the agent the same user id, roles and
    claims; the claims are in no event; a role-gated agent is a 404 on the node too."""
    folder = tmp_path / "agents"
    folder.mkdir()
    module = write_module(folder, AGENTS, "cluster_agents")
    env = {"PYTHONPATH": str(folder)}
    node = await cluster.add_node("--no-executor", "--agents", module, **env)
    worker = await cluster.add_worker("--agents", module, **env)
    alice = user("alice")
    team = f"team-{alice}"
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": alice,
            "iat": now,
            "exp": now + 600,
            "roles": ["analyst"],
            "team": team,
            "email": f"{alice}@example.org",
        },
        cluster.secret,
        algorithm="HS256",
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as http:
        created = await http.post("/v1/runs", json={"agent": "whoami", "input": {}})
        assert created.status_code == 202, created.text
        run = await wait_finished(http, created.json()["run_id"])
        assert run["status"] == "succeeded", run
        assert run["output"] == {
            "pid": worker.proc.pid,  # executed by the worker process, not the node
            "user_id": alice,
            "roles": ["analyst"],
            "team_sha256": hashlib.sha256(team.encode()).hexdigest(),
            "email_domain": "example.org",
        }
        events = (await http.get(f"/v1/runs/{run['run_id']}/events")).text
        assert team not in events
        assert f"{alice}@example.org" not in events
        gated = await http.post("/v1/runs", json={"agent": "vault", "input": {}})
        assert gated.status_code == 404
        assert gated.json()["error"]["code"] == "not_found"
