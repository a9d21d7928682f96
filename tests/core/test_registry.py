"""AgentRegistry: registration rules, freezing, schemas, lookups."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from corral import AgentRegistry, RunContext
from corral.errors import RegistryError, UnknownAgentError, UnknownToolError


class Question(BaseModel):
    question: str
    depth: int = 1


async def answer(ctx: RunContext, inp: Question) -> str:
    """Answer a question.

    Longer text that is not part of the description.
    """
    return inp.question


async def lookup(query: str, limit: int = 5, exact: bool = False) -> list[str]:
    """Look a query up in the documents."""
    return [query] * limit


def test_frozen_registry_refuses_registration_but_keeps_lookups() -> None:
    registry = AgentRegistry()
    registry.add_agent(answer, name="answer", input_model=Question)
    registry.add_tool(lookup)
    registry.freeze()
    registry.freeze()  # idempotent
    assert registry.frozen

    with pytest.raises(RegistryError, match="frozen"):
        registry.add_agent(answer, name="other", input_model=Question)
    with pytest.raises(RegistryError, match="frozen"):
        registry.add_tool(lookup, name="other_tool")
    with pytest.raises(RegistryError, match="frozen"):
        registry.tool("decorated")(lookup)

    assert registry.get_agent("answer").func is answer
    assert registry.get_tool("lookup").func is lookup
    assert [a.name for a in registry.agents()] == ["answer"]
    assert [t.name for t in registry.tools()] == ["lookup"]


def test_frozen_registry_tables_cannot_be_changed_behind_its_back() -> None:
    registry = AgentRegistry()
    registry.add_tool(lookup)
    registry.freeze()
    with pytest.raises(TypeError):
        registry._tools["sneaky"] = registry.get_tool("lookup")  # type: ignore[index]


def test_duplicate_names_are_refused() -> None:
    registry = AgentRegistry()
    registry.add_agent(answer, name="answer", input_model=Question)
    registry.add_tool(lookup)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add_agent(answer, name="answer", input_model=Question)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add_tool(lookup)


@pytest.mark.parametrize("name", ["", "Answer", "1st", "has space", "x" * 65, "dot.ted"])
def test_badly_formed_names_are_refused(name: str) -> None:
    registry = AgentRegistry()
    with pytest.raises(RegistryError):
        registry.add_agent(answer, name=name, input_model=Question)
    if name:  # an empty tool name means "the function's name"
        with pytest.raises(RegistryError):
            registry.add_tool(lookup, name=name)
    assert registry.agents() == []


def test_sync_functions_and_non_models_are_refused() -> None:
    registry = AgentRegistry()

    def sync_agent(ctx: RunContext, inp: Question) -> str:
        return ""

    def sync_tool(x: int) -> int:
        return x

    async def star_tool(*args: Any) -> None:
        return None

    with pytest.raises(RegistryError, match="async"):
        registry.add_agent(sync_agent, name="sync", input_model=Question)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="async"):
        registry.add_tool(sync_tool)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="BaseModel"):
        registry.add_agent(answer, name="answer", input_model=dict)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=r"\*args"):
        registry.add_tool(star_tool)
    assert registry.agents() == []
    assert registry.tools() == []


def test_tool_parameters_become_json_schema() -> None:
    registry = AgentRegistry()
    spec = registry.add_tool(lookup)
    schema = spec.parameters_schema()
    assert schema["type"] == "object"
    assert schema["properties"]["query"]["type"] == "string"
    assert schema["properties"]["limit"] == {"default": 5, "title": "Limit", "type": "integer"}
    assert schema["properties"]["exact"]["type"] == "boolean"
    assert schema["required"] == ["query"]
    assert schema["additionalProperties"] is False
    assert spec.description == "Look a query up in the documents."

    assert dict(spec.params_model.model_validate({"query": "q"})) == {
        "query": "q", "limit": 5, "exact": False,
    }  # fmt: skip
    with pytest.raises(ValidationError):
        spec.params_model.model_validate({"query": "q", "extra": 1})
    with pytest.raises(ValidationError):
        spec.params_model.model_validate({"limit": 1})


def test_agent_input_schema_and_description_come_from_the_model_and_docstring() -> None:
    registry = AgentRegistry()
    spec = registry.add_agent(answer, name="answer", input_model=Question, timeout_s=5)
    assert spec.input_schema() == Question.model_json_schema()
    assert spec.description == "Answer a question."
    assert spec.timeout_s == 5
    assert "answer" in registry
    assert "missing" not in registry


def test_unknown_agent_and_tool_raise_lookup_errors_naming_them() -> None:
    registry = AgentRegistry()
    registry.freeze()
    with pytest.raises(UnknownAgentError) as agent_info:
        registry.get_agent("nope")
    assert agent_info.value.name == "nope"
    assert isinstance(agent_info.value, LookupError)
    with pytest.raises(UnknownToolError) as tool_info:
        registry.get_tool("nada")
    assert tool_info.value.name == "nada"
    with pytest.raises(UnknownToolError):
        registry.get_tool(["not", "hashable"])  # type: ignore[arg-type]


def test_include_copies_agents_and_tools_of_another_registry() -> None:
    base = AgentRegistry()
    base.add_agent(answer, name="answer", input_model=Question)
    base.add_tool(lookup, timeout_s=2)
    app = AgentRegistry()
    app.include(base)
    assert app.get_agent("answer").func is answer
    assert app.get_tool("lookup").timeout_s == 2
    base.freeze()
    app.freeze()
    assert app.get_agent("answer") is not base.get_agent("answer")  # separate tables
