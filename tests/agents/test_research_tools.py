"""The research agent's tools and helpers, and how the built-ins register; no engine needed."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from corral.agents import builtin_registry, echo, research
from corral.agents.docs import (
    MAX_LIMIT,
    Document,
    SearchIndex,
    best_sentence,
    lazy_index,
    load_documents,
    parse_documents,
    stem,
    tokenize,
)
from corral.agents.research import Findings, ResearchInput, answer_pieces, compose_answer
from corral.agents.units import (
    ConversionRequest,
    UnitError,
    conversion_result,
    convert,
    find_conversions,
    format_quantity,
    lookup_unit,
)
from corral.core.events import redact_text
from corral.core.registry import AgentRegistry
from corral.errors import RegistryError

# -- registration ------------------------------------------------------------------------------


def test_builtin_registry_holds_the_builtin_agents_and_tools() -> None:
    """builtin_registry() registers echo and research with their five tools."""
    registry = builtin_registry()
    assert [a.name for a in registry.agents()] == ["echo", "research"]
    assert [t.name for t in registry.tools()] == [
        "calculator",
        "convert_units",
        "current_date",
        "echo",
        "search_docs",
    ]


def test_each_builtin_registry_is_new() -> None:
    """Two calls share nothing, and importing the package registered nothing anywhere."""
    first, second = builtin_registry(), builtin_registry()
    assert first is not second
    assert first.get_tool("search_docs").func is not second.get_tool("search_docs").func
    first.freeze()
    assert not second.frozen
    assert list(AgentRegistry()) == []


def test_registering_twice_into_one_registry_is_refused() -> None:
    """Names are taken once: a second register() into the same registry raises."""
    registry = AgentRegistry()
    echo.register(registry)
    with pytest.raises(RegistryError, match="already registered"):
        echo.register(registry)


def test_tool_parameter_schemas() -> None:
    """Tool parameters are described by JSON Schema and unknown arguments are refused."""
    registry = builtin_registry()
    schema = registry.get_tool("convert_units").parameters_schema()
    assert schema["required"] == ["value", "from_unit", "to_unit"]
    search = registry.get_tool("search_docs").params_model
    assert search.model_validate({"query": "moon"}).model_dump() == {"query": "moon", "limit": 3}
    for bad in ({"query": "moon", "limit": 0}, {"query": ""}, {"query": "x", "extra": 1}):
        with pytest.raises(ValidationError):
            search.model_validate(bad)
    assert registry.get_tool("current_date").parameters_schema()["properties"] == {}


def test_echo_input_matches_the_contract() -> None:
    """EchoInput has the contract's defaults and bounds and refuses unknown fields."""
    defaults = {"message": "hi", "steps": 1, "delay_ms": 0, "fail": False}
    assert echo.EchoInput(message="hi").model_dump() == defaults
    for bad in (
        {"message": "x" * 8193},
        {"message": "x", "steps": 0},
        {"message": "x", "steps": 101},
        {"message": "x", "delay_ms": -1},
        {"message": "x", "delay_ms": 10_001},
        {"message": "x", "other": 1},
        {},
    ):
        with pytest.raises(ValidationError):
            echo.EchoInput.model_validate(bad)


def test_research_input_is_one_bounded_question() -> None:
    """A question of 1..2000 characters (stripped), nothing else."""
    assert ResearchInput(question="  why?  ").question == "why?"
    for bad in ({"question": ""}, {"question": "   "}, {"question": "x" * 2001}, {"q": "x"}):
        with pytest.raises(ValidationError):
            ResearchInput.model_validate(bad)


async def test_echo_tool_returns_its_text() -> None:
    """The echo tool answers {'text': text}."""
    assert await builtin_registry().get_tool("echo").func(text="hello") == {"text": "hello"}


async def test_current_date_uses_the_given_clock() -> None:
    """current_date returns the injected clock's day in ISO format, in UTC."""
    registry = AgentRegistry()
    research.register(registry, today=lambda: date(2026, 1, 2))
    result = await registry.get_tool("current_date").func()
    assert result == {"date": "2026-01-02", "timezone": "UTC"}


async def test_current_date_defaults_to_utc_today() -> None:
    """Without a clock, current_date answers today's UTC date."""
    result = await builtin_registry().get_tool("current_date").func()
    assert date.fromisoformat(result["date"]) == research.utc_today()


async def test_search_docs_tool_uses_the_given_documents() -> None:
    """A registration may bring its own documents; the tool searches those."""
    registry = AgentRegistry()
    docs = [Document("a", "Otters", "Otters hold hands while they sleep."), Document("b", "B", "x")]
    research.register(registry, documents=docs)
    result = await registry.get_tool("search_docs").func(query="sleeping otters", limit=3)
    assert result["query"] == "sleeping otters"
    assert [r["id"] for r in result["results"]] == ["a"]
    assert set(result["results"][0]) == {"id", "title", "score", "snippet"}


async def test_calculator_and_convert_units_tools() -> None:
    """The registered tool functions return the pure helpers' results."""
    registry = builtin_registry()
    calc = await registry.get_tool("calculator").func(expression="12*7")
    assert calc["formatted"] == "84"
    conv = await registry.get_tool("convert_units").func(value=5, from_unit="km", to_unit="mi")
    assert conv["text"] == "5 km = 3.10686 mi"


# -- units --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (5, "km", "miles", 3.10686),
        (1, "mile", "m", 1609.344),
        (12, "inches", "ft", 1.0),
        (100, "°C", "°F", 212.0),
        (-40, "celsius", "fahrenheit", -40.0),
        (32, "F", "C", 0.0),
        (0, "K", "degrees celsius", -273.15),
        (100, "km/h", "m/s", 27.7778),
        (60, "mph", "km/h", 96.5606),
        (10, "knots", "km/h", 18.52),
        (3, "hours", "seconds", 10800.0),
        (1, "year", "days", 365.25),
        (1, "lb", "kg", 0.453592),
        (1, "stone", "pounds", 14.0),
        (1, "ly", "km", 9.46073e12),
        (2.5, "KG", "Grams", 2500.0),
    ],
)
def test_convert(value: float, source: str, target: str, expected: float) -> None:
    """Conversions of length, mass, time, speed and temperature, any alias and case."""
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("source", "target", "fragment"),
    [
        ("furlong", "m", "unknown unit 'furlong'"),
        ("m", "parsecs", "unknown unit 'parsecs'"),
        ("kg", "km", "cannot convert mass (kg) to length (km)"),
        ("°C", "s", "cannot convert temperature"),
    ],
)
def test_convert_refuses_unknown_or_incompatible_units(
    source: str, target: str, fragment: str
) -> None:
    """Unknown units list the known ones; mismatched dimensions say which they are."""
    with pytest.raises(UnitError) as excinfo:
        convert(1, source, target)
    assert fragment in str(excinfo.value)
    if "unknown" in fragment:
        assert "known units are" in str(excinfo.value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_convert_refuses_non_finite_values(value: float) -> None:
    """Infinity and NaN are not quantities."""
    with pytest.raises(UnitError, match="finite number"):
        convert(value, "m", "km")


def test_convert_refuses_temperatures_below_absolute_zero() -> None:
    """-300 °C does not exist."""
    with pytest.raises(UnitError, match="below absolute zero"):
        convert(-300, "C", "K")


def test_lookup_and_format() -> None:
    """Aliases resolve to one canonical symbol; quantities print with six digits."""
    assert lookup_unit(" Kilometres ").symbol == "km"
    assert lookup_unit("degrees  Fahrenheit").symbol == "°F"
    assert lookup_unit("°c").symbol == "°C"
    assert format_quantity(10, "kilometers") == "10 km"
    assert format_quantity(212.0, "fahrenheit") == "212°F"


def test_conversion_result() -> None:
    """The convert_units tool's result uses canonical symbols and readable text."""
    result = conversion_result(100, "celsius", "F")
    assert result == {
        "value": 100,
        "from_unit": "°C",
        "to_unit": "°F",
        "result": pytest.approx(212.0),
        "text": "100°C = 212°F",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("convert 5 km to miles", [(5.0, "km", "miles")]),
        ("How many miles is 10 km?", [(10.0, "km", "miles")]),
        ("how many seconds are in 3 hours", [(3.0, "hours", "seconds")]),
        ("how many seconds are there in 2 days?", [(2.0, "days", "seconds")]),
        ("What is 100 °F in celsius?", [(100.0, "°f", "celsius")]),
        ("-40 C to F", [(-40.0, "c", "f")]),
        ("1,500 m in feet and 60 mph to km/h", [(1500.0, "m", "feet"), (60.0, "mph", "km/h")]),
        ("10 nautical miles in km", [(10.0, "nautical miles", "km")]),
        ("I walked 5 km today", []),
        ("what is 12*7", []),
    ],
)
def test_find_conversions(text: str, expected: list[tuple[float, str, str]]) -> None:
    """The usual phrasings of a conversion are found, with units as written."""
    assert find_conversions(text) == [ConversionRequest(*item) for item in expected]


# -- documents and search -------------------------------------------------------------------------


def test_shipped_documents() -> None:
    """30-40 short documents with unique ids, 60-150 words each, that redaction leaves intact."""
    documents = load_documents()
    assert 30 <= len(documents) <= 40
    assert len({d.id for d in documents}) == len(documents)
    for document in documents:
        assert 60 <= len(document.text.split()) <= 150, document.id
        assert document.title.strip(), document.id
        assert document.topic, document.id
        assert redact_text(document.text) == document.text, document.id
    assert "corral" in {d.topic for d in documents}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("[]", '"documents" list'),
        ('{"documents": [1]}', "must be an object"),
        ('{"documents": [{"id": "a", "title": "A"}]}', "'text'"),
        ('{"documents": [{"id": "a", "title": "A", "text": "t", "topic": 3}]}', "'topic'"),
        (json.dumps({"documents": [{"id": "a", "title": "A", "text": "t"}] * 2}), "twice"),
    ],
)
def test_parse_documents_refuses_bad_sets(raw: str, fragment: str) -> None:
    """A malformed document set is refused with the reason."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_documents(raw)


def test_tokenize_and_stem() -> None:
    """Stop words, one-letter words and short numbers go; stems join word forms."""
    assert tokenize("What is 12*7 in the year 1969?") == ["year", "1969"]
    assert stem("isolation") == stem("isolated") == stem("isolates") == "isolat"
    assert stem("galaxies") == "galaxy"
    assert stem("class") == "class"


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex(load_documents())


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("How does corral isolate users?", "corral-isolation"),
        ("What is the speed of light?", "speed-of-light"),
        ("When did Apollo 11 land on the moon?", "moon"),
        ("Who invented the transistor?", "transistor"),
        ("How tall is the highest mountain?", "mount-everest"),
        ("Who proposed the World Wide Web?", "world-wide-web"),
        ("boiling point of water", "water-phase-points"),
        ("how many cells are in a human body", "cells"),
        ("Ada Lovelace", "analytical-engine"),
    ],
)
def test_search_ranks_the_relevant_document_first(
    index: SearchIndex, query: str, best: str
) -> None:
    """BM25 puts the document that answers the question first."""
    hits = index.search(query)
    assert hits[0].document.id == best
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_is_deterministic_and_bounded(index: SearchIndex) -> None:
    """The same query gives the same hits; limit caps them; no match gives nothing."""
    query = "planets stars galaxy light"
    assert index.search(query, 5) == index.search(query, 5)
    assert len(index.search(query, 2)) == 2
    assert index.search("blorp zzz") == []
    assert index.search("the of and?") == []
    for bad in (0, MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="limit"):
            index.search(query, bad)


def test_search_snippet_is_the_best_matching_sentence(index: SearchIndex) -> None:
    """The snippet is the sentence of the document that holds most of the query's words."""
    hit = index.search("When did Apollo 11 land on the moon?")[0]
    assert hit.snippet.startswith("Apollo 11 landed")
    assert hit.as_json() == {
        "id": "moon",
        "title": "The Moon",
        "score": hit.score,
        "snippet": hit.snippet,
    }
    assert best_sentence("One. Two three.", set(tokenize("three"))) == "Two three."
    assert best_sentence("Nothing matches here.", {"zzz"}) == "Nothing matches here."


def test_empty_index_finds_nothing() -> None:
    """An index over no documents answers every query with no hits."""
    assert SearchIndex([]).search("moon") == []


def test_lazy_index_builds_once_per_closure() -> None:
    """lazy_index loads on the first call only, and each closure has its own index."""
    calls: list[int] = []

    def loader() -> list[Document]:
        calls.append(1)
        return [Document("a", "A", "alpha beta")]

    get_index = lazy_index(loader)
    assert calls == []
    assert get_index() is get_index()
    assert calls == [1]
    other = lazy_index(loader)
    assert other() is not get_index()
    assert calls == [1, 1]


# -- answer text --------------------------------------------------------------------------------


def _source(n: int) -> dict[str, Any]:
    return {"id": f"d{n}", "title": f"Title {n}", "score": 1.0, "snippet": f"Fact {n}."}


def test_compose_answer_puts_results_first_and_cites_sources() -> None:
    """Calculations lead; document facts carry [n] marks; a source list closes the answer."""
    found = Findings(
        calculations=["12*7 = 84."],
        conversions=["5 km = 3.10686 mi."],
        problems=["I could not work out 1/0: division by zero is undefined."],
        date="2026-01-02",
        sources=[_source(1), _source(2)],
    )
    assert compose_answer(found) == (
        "12*7 = 84. 5 km = 3.10686 mi. Today's date is 2026-01-02 (UTC). "
        "I could not work out 1/0: division by zero is undefined.\n\n"
        "From my documents: Fact 1. [1] Fact 2. [2]\n\n"
        "Sources:\n[1] Title 1\n[2] Title 2"
    )


def test_compose_answer_without_findings_says_so() -> None:
    """With nothing found, the answer says what the agent can help with."""
    assert compose_answer(Findings()).startswith("I found nothing about that")


@pytest.mark.parametrize("words", [1, 3, 8])
def test_answer_pieces_concatenate_to_the_answer(words: int) -> None:
    """The answer_delta texts join back into exactly the answer, whitespace included."""
    answer = compose_answer(Findings(calculations=["12*7 = 84."], sources=[_source(1)]))
    pieces = answer_pieces(answer, words)
    assert "".join(pieces) == answer
    assert len(pieces) > 1
    assert answer_pieces("") == [""]
