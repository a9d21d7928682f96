"""The ``research`` agent (contract §6) and its tools: an offline, deterministic demonstration.

Tools, each a real entry in the registry: ``calculator(expression)``, ``search_docs(query,
limit=3)``, ``convert_units(value, from_unit, to_unit)`` and ``current_date()``. The agent reads
the question, works out any arithmetic and unit conversion in it, looks up the date when asked,
searches the shipped documents, and streams an answer that cites them as ``[1] Title``.

The same question always yields the same events (timings and today's date aside): nothing here
is random, and the search breaks ties by document id.

Two kinds of question make it ask its user first (``ctx.ask``, contract §9), to show the human
in the loop out of the box:

- a clarification: a temperature without a scale (``Convert 100 degrees to kelvin``) — it asks
  which scale is meant, with a choice of scales (an ``enum``), and assumes Celsius if no
  answer comes within the input timeout;
- a confirmation: a question that says ``check with me`` (or ``confirm with me``, ``ask me
  first``) — before searching the documents it asks whether to, with a yes/no (``boolean``).

Every other question is answered exactly as before, without a question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from corral.agents.calculator import calculate, find_expressions, format_number
from corral.agents.docs import MAX_LIMIT, Document, lazy_index, load_documents
from corral.agents.questions import clarify_scale, confirm_search
from corral.agents.units import (
    ConversionRequest,
    conversion_result,
    find_bare_degrees,
    find_conversions,
)
from corral.errors import ToolCallError

if TYPE_CHECKING:
    from corral.core.engine import RunContext
    from corral.core.registry import AgentRegistry

_DATE_QUESTION = re.compile(
    r"\b(?:today|today's|todays|tonight|date|what day|which day|current (?:day|year|month))\b",
    re.IGNORECASE,
)
# A document is cited when it scores at least this share of the best match: weaker matches
# are usually a shared common word ("land" in a question about the Moon landing).
_RELEVANCE_SHARE = 0.5
_WORDS_PER_DELTA = 8
_EXCEPTION_PREFIX = re.compile(r"^[A-Z]\w*(?:Error|Exception): ")
_CHECK_WITH_ME = re.compile(
    r"\b(?:check with me|confirm with me|ask me first|ask me before)\b", re.IGNORECASE
)


class ResearchInput(BaseModel):
    """Input of ``research``: one question in plain language."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    question: str = Field(
        min_length=1,
        max_length=2000,
        description="A question; arithmetic (12*7), unit conversions (5 km to miles) and "
        "questions about the date are worked out, the rest is looked up in the documents.",
    )


def utc_today() -> date:
    return datetime.now(UTC).date()


def register(
    registry: AgentRegistry,
    *,
    documents: Sequence[Document] | None = None,
    today: Callable[[], date] = utc_today,
) -> None:
    """Register the research tools and the ``research`` agent into ``registry``.

    ``documents`` replaces the shipped document set, and ``today`` the clock of
    ``current_date``. The search index is built on first use and belongs to this registration.
    """
    loader: Callable[[], Sequence[Document]] = load_documents
    if documents is not None:
        fixed = tuple(documents)
        loader = lambda: fixed  # noqa: E731 - a one-line closure over the given documents
    get_index = lazy_index(loader)

    @registry.tool(
        "calculator",
        description="Evaluate arithmetic: numbers, + - * / // % ** (or ^), unary signs and "
        "parentheses. Never evaluates code.",
        timeout_s=5.0,
    )
    async def calculator(expression: str) -> dict[str, object]:
        return calculate(expression)

    @registry.tool(
        "search_docs",
        description="Search the built-in reference documents; returns the best matches with "
        "id, title, score and the most relevant sentence.",
        timeout_s=10.0,
    )
    async def search_docs(
        query: Annotated[str, Field(min_length=1, max_length=2000)],
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 3,
    ) -> dict[str, object]:
        # Building the index on the first call reads a small package file; later calls are
        # pure computation over a few dozen documents.
        hits = get_index().search(query, limit)
        return {"query": query, "results": [hit.as_json() for hit in hits]}

    @registry.tool(
        "convert_units",
        description="Convert a value between units of length, mass, time, speed or temperature.",
        timeout_s=5.0,
    )
    async def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, object]:
        return conversion_result(value, from_unit, to_unit)

    @registry.tool("current_date", description="Today's date in UTC, as YYYY-MM-DD.")
    async def current_date() -> dict[str, str]:
        return {"date": today().isoformat(), "timezone": "UTC"}

    @registry.agent(
        "research",
        input_model=ResearchInput,
        description="A demonstration research assistant: works out arithmetic and unit "
        "conversions, searches a small document set and cites it. Offline and deterministic. "
        "It asks you which scale a temperature without one means (try: convert 100 degrees "
        "to kelvin), and before searching when you say 'check with me'.",
    )
    async def research(ctx: RunContext, params: ResearchInput) -> dict[str, Any]:
        return await answer_question(ctx, params.question)


@dataclass(slots=True)
class Findings:
    """What the research steps produced, ready for :func:`compose_answer`."""

    calculations: list[str] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    date: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)


async def answer_question(ctx: RunContext, question: str) -> dict[str, Any]:
    """Research ``question`` step by step and return ``{"answer", "sources"}``.

    A failing tool is explained in an ``agent_thinking`` event and left out of the answer; it
    never fails the run. Cancellation propagates from any await (the tool engine still closes
    each tool call's event pair).
    """
    expressions = find_expressions(question)
    conversions = find_conversions(question)
    unscaled = find_bare_degrees(question)
    wants_date = bool(_DATE_QUESTION.search(question))
    check_first = bool(_CHECK_WITH_ME.search(question))
    total = 3 + bool(expressions) + bool(conversions or unscaled) + wants_date
    step = 1
    plan = _plan(expressions, conversions, wants_date)
    if unscaled:
        plan += " A temperature has no scale, so I'll ask you which one you mean."
    if check_first:
        plan += " You asked me to check with you, so I'll ask before searching."
    await ctx.think(plan, step=step, total_steps=total)
    found = Findings()

    if expressions:
        step += 1
        await ctx.think(
            f"Working out {_join(expressions)} with the calculator.", step=step, total_steps=total
        )
        for expression in expressions:
            try:
                result = await ctx.tools.call("calculator", expression=expression)
            except ToolCallError as exc:
                reason = _reason(exc)
                found.problems.append(f"I could not work out {expression}: {reason}.")
                await ctx.think(
                    f"The calculator could not evaluate {expression} ({reason}); "
                    "I'll leave it out and carry on.",
                    step=step,
                    total_steps=total,
                )
            else:
                found.calculations.append(f"{expression} = {result['formatted']}.")

    if conversions or unscaled:
        step += 1
        for value, target in unscaled:
            conversions.append(await clarify_scale(ctx, value, target, step, total))
        await ctx.think(
            f"Converting {_join([_describe(c) for c in conversions])}.",
            step=step,
            total_steps=total,
        )
        for request in conversions:
            try:
                result = await ctx.tools.call(
                    "convert_units",
                    value=request.value,
                    from_unit=request.from_unit,
                    to_unit=request.to_unit,
                )
            except ToolCallError as exc:
                reason = _reason(exc)
                found.problems.append(f"I could not convert {_describe(request)}: {reason}.")
                await ctx.think(
                    f"That conversion did not work ({reason}); I'll carry on without it.",
                    step=step,
                    total_steps=total,
                )
            else:
                found.conversions.append(f"{result['text']}.")

    if wants_date:
        step += 1
        await ctx.think(
            "The question mentions the date, so I'll check today's date in UTC.",
            step=step,
            total_steps=total,
        )
        try:
            found.date = (await ctx.tools.call("current_date"))["date"]
        except ToolCallError as exc:
            await ctx.think(
                f"I could not read the date ({_reason(exc)}); I'll answer without it.",
                step=step,
                total_steps=total,
            )

    step += 1
    if check_first and not await confirm_search(ctx, step, total):
        await ctx.think(
            "You said no, so I'll answer without searching my documents.",
            step=step,
            total_steps=total,
        )
    else:
        await _search(ctx, question, found, step, total)

    step += 1
    await ctx.think(
        f"Putting the answer together from {_count(found)}.", step=step, total_steps=total
    )
    answer = compose_answer(found)
    for piece in answer_pieces(answer):
        await ctx.update("answer_delta", text=piece)
    sources = [{"id": s["id"], "title": s["title"], "score": s["score"]} for s in found.sources]
    return {"answer": answer, "sources": sources}


async def _search(ctx: RunContext, question: str, found: Findings, step: int, total: int) -> None:
    await ctx.think(
        "Searching my reference documents for background on the question.",
        step=step,
        total_steps=total,
    )
    try:
        results = (await ctx.tools.call("search_docs", query=question, limit=3))["results"]
    except ToolCallError as exc:
        await ctx.think(
            f"The document search failed ({_reason(exc)}); I'll answer from what I worked out.",
            step=step,
            total_steps=total,
        )
    else:
        found.sources = _relevant(results)
        await ctx.think(_search_summary(found.sources), step=step, total_steps=total)


def _plan(
    expressions: Sequence[str], conversions: Sequence[ConversionRequest], wants_date: bool
) -> str:
    todo = []
    if expressions:
        todo.append(f"calculate {_join(expressions)}")
    if conversions:
        todo.append(f"convert {_join([_describe(c) for c in conversions])}")
    if wants_date:
        todo.append("look up today's date")
    todo.append("search the documents for background")
    return (
        "I'll look for arithmetic in the question first, then for unit conversions and "
        f"questions about the date, and then search my reference documents. Here I need to "
        f"{_join(todo)}."
    )


def _relevant(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if not results:
        return []
    best = float(results[0]["score"])
    return [r for r in results if float(r["score"]) >= best * _RELEVANCE_SHARE]


def _search_summary(sources: Sequence[dict[str, Any]]) -> str:
    if not sources:
        return "None of my documents matched the question."
    titles = _join([f"“{s['title']}”" for s in sources])
    noun = "document looks" if len(sources) == 1 else "documents look"
    return f"{len(sources)} {noun} relevant: {titles}."


def _count(found: Findings) -> str:
    parts = []
    for items, noun in (
        (found.calculations, "calculation"),
        (found.conversions, "conversion"),
        (found.sources, "source"),
    ):
        if items:
            parts.append(f"{len(items)} {noun}{'' if len(items) == 1 else 's'}")
    if found.date:
        parts.append("today's date")
    return _join(parts) if parts else "what little I found"


def compose_answer(found: Findings) -> str:
    """The answer text: results first, then document facts with ``[n]`` marks, then sources."""
    paragraphs = []
    worked = [*found.calculations, *found.conversions]
    if found.date:
        worked.append(f"Today's date is {found.date} (UTC).")
    worked.extend(found.problems)
    if worked:
        paragraphs.append(" ".join(worked))
    if found.sources:
        facts = [f"{s['snippet']} [{n}]" for n, s in enumerate(found.sources, start=1)]
        paragraphs.append("From my documents: " + " ".join(facts))
        listing = [f"[{n}] {s['title']}" for n, s in enumerate(found.sources, start=1)]
        paragraphs.append("Sources:\n" + "\n".join(listing))
    if not paragraphs:
        paragraphs.append(
            "I found nothing about that in my documents, and the question holds no arithmetic "
            "or unit conversion for me to work out. Try asking about physics, units, geography, "
            "astronomy, biology, the history of computing or corral itself."
        )
    return "\n\n".join(paragraphs)


def answer_pieces(answer: str, words: int = _WORDS_PER_DELTA) -> list[str]:
    """``answer`` cut into deltas of ``words`` words; joined, they give ``answer`` back."""
    tokens = re.findall(r"\s*\S+\s*", answer)
    pieces = ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return pieces or [answer]


def _describe(request: ConversionRequest) -> str:
    return f"{format_number(request.value, 6)} {request.from_unit} to {request.to_unit}"


def _reason(exc: ToolCallError) -> str:
    return _EXCEPTION_PREFIX.sub("", exc.message).rstrip(".")


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
