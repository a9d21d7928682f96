"""The ``peer`` agent: the shape of ../shared/peers/lg_app/graph.py, for the peers suite.

Per run: four agent-defined events (``agent_update``) and one 20 ms wait, like the LangGraph
graph's four custom events and its 20 ms "tool" node; corral adds its own ``agent_started`` and
terminal event around them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict

from corral import AgentRegistry, RunContext


class PeerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = "?"
    run_no: int = 0


def register(registry: AgentRegistry) -> None:
    @registry.agent("peer", input_model=PeerInput, description="Peer-benchmark agent.")
    async def peer(ctx: RunContext, params: PeerInput) -> dict[str, Any]:
        user, n = params.user, params.run_no
        await ctx.update("tool_start", seq=0, user=user, run_no=n)
        await ctx.update("tool_progress", seq=1, user=user, run_no=n, pct=50)
        await asyncio.sleep(0.020)
        await ctx.update("tool_end", seq=2, user=user, run_no=n)
        answer = f"done:result-for-{user}-{n}"
        await ctx.update("final", seq=3, user=user, run_no=n, answer=answer)
        return {"answer": answer}
