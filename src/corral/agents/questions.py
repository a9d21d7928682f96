"""The questions ``research`` asks its user (contract §9), when a question calls for one.

A clarification — a temperature without a scale: which scale is meant — and a confirmation —
the question said "check with me": search the documents or not. Each has a default for when no
answer comes within the input timeout, so the run always finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from corral.agents.calculator import format_number
from corral.agents.units import ConversionRequest, lookup_unit
from corral.errors import InputTimeout

if TYPE_CHECKING:
    from corral.core.engine import RunContext

SCALES = ("celsius", "fahrenheit", "kelvin")


async def clarify_scale(
    ctx: RunContext, value: float, target: str, step: int, total: int
) -> ConversionRequest:
    """Ask which scale ``value`` degrees is in (Celsius if no answer comes in time)."""
    scales = [s for s in SCALES if lookup_unit(s).symbol != lookup_unit(target).symbol]
    amount = format_number(value, 6)
    await ctx.think(
        f"“{amount} degrees” could be {_join(scales, 'or')}; I'll ask you which you mean.",
        step=step,
        total_steps=total,
    )
    schema = {
        "type": "object",
        "title": "Temperature scale",
        "properties": {"scale": {"type": "string", "enum": scales, "title": "Scale"}},
        "required": ["scale"],
        "additionalProperties": False,
    }
    prompt = f"By {amount} degrees, do you mean {_join([s.title() for s in scales], 'or')}?"
    try:
        scale = str((await ctx.ask(prompt, schema))["scale"])
    except InputTimeout:
        scale = scales[0]
        await ctx.think(
            f"No answer came in time, so I'll take it as {scale}.", step=step, total_steps=total
        )
    return ConversionRequest(value=value, from_unit=scale, to_unit=target)


async def confirm_search(ctx: RunContext, step: int, total: int) -> bool:
    """Ask whether to search the documents (yes if no answer comes in time)."""
    schema = {
        "type": "object",
        "title": "Search the documents?",
        "properties": {"search": {"type": "boolean", "title": "Search", "default": True}},
        "required": ["search"],
        "additionalProperties": False,
    }
    try:
        reply = await ctx.ask("Shall I search my reference documents as well?", schema)
    except InputTimeout:
        await ctx.think("No answer came in time, so I'll search.", step=step, total_steps=total)
        return True
    return bool(reply["search"])


def _join(items: Sequence[str], last: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"
