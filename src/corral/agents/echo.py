"""The ``echo`` agent (contract §6): deterministic, cheap, for tests and load tests.

It is the load-test hot path, so it does nothing beyond what the contract asks for.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import AgentFailed

if TYPE_CHECKING:
    from corral.core.engine import RunContext
    from corral.core.registry import AgentRegistry


class EchoInput(BaseModel):
    """Input of ``echo``: what to repeat, how often, how slowly, and whether to fail after."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(max_length=8192, description="Text repeated at every step.")
    steps: int = Field(default=1, ge=1, le=100, description="How many think + tool steps.")
    delay_ms: int = Field(
        default=0, ge=0, le=10_000, description="Milliseconds to wait before each step."
    )
    fail: bool = Field(default=False, description="End with agent_error after the steps.")


def register(registry: AgentRegistry) -> None:
    """Register the ``echo`` tool and the ``echo`` agent into ``registry``."""

    @registry.tool("echo", description="Return the given text unchanged, as {'text': text}.")
    async def echo_tool(text: str) -> dict[str, str]:
        return {"text": text}

    @registry.agent(
        "echo",
        input_model=EchoInput,
        description="Repeat a message for a number of steps, calling the echo tool each time. "
        "Deterministic; for tests and load tests.",
    )
    async def echo_agent(ctx: RunContext, params: EchoInput) -> dict[str, object]:
        """Cancellation-safe: it only awaits sleeps and the engine's own emits and tool calls."""
        message, steps = params.message, params.steps
        delay_s = params.delay_ms / 1000
        for step in range(1, steps + 1):
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await ctx.think(f"Echo step {step} of {steps}: {message}", step=step, total_steps=steps)
            await ctx.tools.call("echo", text=message)
        if params.fail:
            raise AgentFailed("echo was asked to fail", error_type="agent_failed")
        return {"message": message, "steps": steps}
