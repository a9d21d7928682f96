"""Agents for the human-in-the-loop and thread-state tests, served in-process (``registry()``)
or by child processes (``CORRAL_AGENTS=corral.agents,hitl_agents`` with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral import AgentFailed, AgentRegistry, InputTimeout, RunContext
from corral.agents import register as register_builtins


class Approval(BaseModel):
    approved: bool
    note: str = Field(default="", max_length=100)


class AskInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = "Shall I go on?"
    answer_schema: dict[str, Any] | None = None
    use_model: bool = False  # ask with the Approval model instead of answer_schema
    timeout_s: float | None = None
    catch_timeout: bool = False
    questions: int = Field(default=1, ge=1, le=5)


class StateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: str
    fail: bool = False
    hang: bool = False  # wait (for a cancel or a kill) after setting the state


class HistoryInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = 50


def register(registry: AgentRegistry) -> None:
    @registry.agent("asker", input_model=AskInput, description="Asks its user, then answers.")
    async def asker(ctx: RunContext, params: AskInput) -> dict[str, Any]:
        answers: list[Any] = []
        for n in range(params.questions):
            await ctx.think(f"question {n + 1}")
            try:
                if params.use_model:
                    approval = await ctx.ask(params.prompt, Approval, timeout_s=params.timeout_s)
                    answers.append({"model": type(approval).__name__, **approval.model_dump()})
                else:
                    answers.append(
                        await ctx.ask(
                            params.prompt, params.answer_schema, timeout_s=params.timeout_s
                        )
                    )
            except InputTimeout as exc:
                if not params.catch_timeout:
                    raise
                return {"answers": answers, "timed_out": exc.request_id}
        await ctx.tools.call("echo", text="after the answer")
        return {"answers": answers}

    @registry.agent("stateful", input_model=StateInput, description="Appends to thread state.")
    async def stateful(ctx: RunContext, params: StateInput) -> dict[str, Any]:
        items = [*ctx.state.get("items", []), params.add]
        ctx.set_state({"items": items})
        if params.hang:
            await ctx.think("hanging")
            await asyncio.sleep(3600)
        if params.fail:
            raise AgentFailed("asked to fail after set_state")
        return {"items": items, "seen": ctx.state}

    @registry.agent("history", input_model=HistoryInput, description="Lists earlier runs.")
    async def history(ctx: RunContext, params: HistoryInput) -> dict[str, Any]:
        runs = await ctx.thread_history(params.limit)
        return {"inputs": [r["input"] for r in runs], "statuses": [r["status"] for r in runs]}

    @registry.agent("big_state", input_model=HistoryInput, description="Tries a huge state.")
    async def big_state(ctx: RunContext, params: HistoryInput) -> dict[str, Any]:
        try:
            ctx.set_state({"blob": "x" * (1024 * 1024)})
        except ValueError as exc:
            return {"refused": str(exc)}
        return {"refused": None}


def registry() -> AgentRegistry:
    """The built-in agents plus these."""
    reg = AgentRegistry()
    register_builtins(reg)
    register(reg)
    return reg
