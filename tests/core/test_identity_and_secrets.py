"""The engine's side of identity (contract §2): ``ctx.identity``, ``ctx.secret`` with value
redaction of every event (text deltas too), tools that take the RunContext, roles on agents."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from corral import (
    AgentRegistry,
    EventType,
    Identity,
    InProcessEventBus,
    RunContext,
    ToolCallError,
    UnifiedToolExecutionEngine,
)
from corral.core.engine import IsolatedExecutionEngine
from corral.core.events import REDACTED
from corral.core.factory import ExecutionEngineFactory
from corral.core.secrets import SecretRedactor
from corral.errors import OwnershipError, RegistryError, SecretUnavailable
from corral.logs import SecretLogFilter

from .conftest import BusSink, new_ctx

KEY = "sk-test-0123456789abcdef"


class Script(BaseModel):
    deltas: list[str] = []
    kind: str = "text_delta"
    then: str = "done"


def registry() -> AgentRegistry:
    reg = AgentRegistry()

    @reg.tool(description="Reads the caller's key through the run context")
    async def keyed(ctx: RunContext, prefix: str) -> dict[str, Any]:
        return {"value": f"{prefix}{await ctx.secret('KEY')}", "user": ctx.identity.user_id}

    @reg.tool()
    async def session() -> dict[str, Any]:
        return {"session_id": "S-123", "token_count": 42}

    @reg.agent("streamer", input_model=Script)
    async def streamer(ctx: RunContext, script: Script) -> dict[str, Any]:
        key = await ctx.secret("KEY")
        for delta in script.deltas:
            await ctx.update(script.kind, text=delta.replace("<KEY>", key or ""))
        await ctx.think(script.then)
        return {"text": "".join(script.deltas).replace("<KEY>", key or "")}

    @reg.agent("tooling", input_model=Script)
    async def tooling(ctx: RunContext, _script: Script) -> dict[str, Any]:
        keyed_result = await ctx.tools.call("keyed", prefix="k=")
        info = await ctx.tools.call("session")
        return {
            "tool_gave_real": keyed_result["value"] == f"k={KEY}",
            "sid": info["session_id"],
            "count": info["token_count"],
        }

    @reg.agent("whoami", input_model=Script)
    async def whoami(ctx: RunContext, _script: Script) -> dict[str, Any]:
        return {"user": ctx.identity.user_id, "roles": sorted(ctx.identity.roles)}

    @reg.agent("gated", input_model=Script, roles={"analyst"})
    async def gated(ctx: RunContext, _script: Script) -> None:
        return None

    reg.freeze()
    return reg


async def resolve(identity: Identity, name: str) -> str | None:
    return KEY if (identity.user_id, name) == ("alice", "KEY") else None


def engine(
    sink: BusSink, identity: Identity | None = None, **kwargs: Any
) -> IsolatedExecutionEngine:
    factory = ExecutionEngineFactory(registry(), secrets=kwargs.pop("secrets", resolve))
    return factory.create_engine(new_ctx("alice"), sink, identity=identity, **kwargs)


@pytest.fixture
def sink() -> BusSink:
    return BusSink(InProcessEventBus())


def deltas_of(sink: BusSink, run_id: str, kind: str = "text_delta") -> list[str]:
    return [
        e["data"]["text"]
        for e in sink.wire(run_id)
        if e["type"] == "agent_update" and e["data"]["kind"] == kind
    ]


@pytest.mark.parametrize(
    "pieces",
    [
        ["key: <KEY> ok"],
        ["key: sk-te", "st-0123", "456789abcdef ok"],
        ["key: ", "s", "k", "-", "test-0123456789abcde", "f", " ok"],
        ["<KEY>", "<KEY>"],
        ["key: sk-test-0123456789abcde"],  # ends one character short of the key
    ],
    ids=["whole", "split in three", "char by char", "twice in a row", "almost"],
)
async def test_a_secret_split_across_deltas_is_masked_and_the_deltas_add_up(
    sink: BusSink, pieces: list[str]
) -> None:
    """However the key is cut into deltas, the deltas sent concatenate to the masked text,
    none is empty, and what was held back goes out before the next event."""
    eng = engine(sink)
    outcome = await eng.run("streamer", {"deltas": pieces})
    whole = "".join(pieces).replace("<KEY>", KEY)
    masked = SecretRedactor([KEY]).redact_text(whole)  # touching occurrences: one mask
    sent = deltas_of(sink, eng.context.run_id)
    assert "".join(sent) == masked
    assert all(sent)
    assert KEY not in repr(sink.wire(eng.context.run_id))
    types = sink.types(eng.context.run_id)
    assert types[-2:] == ["agent_thinking", "agent_completed"]
    assert outcome.output == {"text": masked}


async def test_answer_deltas_are_a_stream_of_their_own(sink: BusSink) -> None:
    eng = engine(sink)
    await eng.run(
        "streamer", {"deltas": ["a sk-test-01", "23456789abcdef."], "kind": "answer_delta"}
    )
    assert "".join(deltas_of(sink, eng.context.run_id, "answer_delta")) == f"a {REDACTED}."


async def test_without_secrets_deltas_pass_unchanged(sink: BusSink) -> None:
    """No resolved secret: every delta goes out as emitted, empty ones included."""
    eng = engine(sink, secrets=None)
    await eng.run("streamer", {"deltas": ["a", "", "<KEY>"]})
    assert deltas_of(sink, eng.context.run_id) == ["a", "", ""]


async def test_a_context_tool_gets_the_run_and_the_agent_gets_real_results(
    sink: BusSink,
) -> None:
    """A tool declaring a RunContext parameter gets the run's context (not an argument);
    the agent gets its results unredacted while the events show them masked — by value for
    the secret, by key for session_id/token_count."""
    eng = engine(sink)
    outcome = await eng.run("tooling", {})
    assert outcome.output == {"tool_gave_real": True, "sid": "S-123", "count": 42}
    completed = {
        e["data"]["tool"]: e["data"]
        for e in sink.wire(eng.context.run_id)
        if e["type"] == "tool_completed"
    }
    assert completed["keyed"]["result"] == {"value": f"k={REDACTED}", "user": "alice"}
    assert completed["session"]["result"] == {"session_id": REDACTED, "token_count": REDACTED}


def test_a_run_context_parameter_is_not_part_of_the_tool_schema() -> None:
    reg = registry()
    schema = reg.get_tool("keyed").parameters_schema()
    assert set(schema["properties"]) == {"prefix"}
    assert reg.get_tool("keyed").context_param == "ctx"
    assert reg.get_tool("session").context_param is None


async def test_a_run_context_cannot_be_passed_in_and_a_bare_tool_engine_has_none() -> None:
    """A caller cannot pass `ctx` itself (it is no argument); a tool engine made without a
    run refuses a context-taking tool with an error, its event pair complete."""
    recorded: list[tuple[EventType, dict[str, Any]]] = []

    async def emit(type_: EventType, data: dict[str, Any]) -> None:
        recorded.append((type_, data))

    tools = UnifiedToolExecutionEngine(new_ctx("alice"), registry(), emit)
    with pytest.raises(ToolCallError, match="invalid arguments"):
        await tools.call("keyed", prefix="x", ctx="forged")
    with pytest.raises(ToolCallError, match="RunContext"):
        await tools.call("keyed", prefix="x")
    statuses = [d["status"] for t, d in recorded if t is EventType.TOOL_COMPLETED]
    assert statuses == ["error", "error"]


def test_two_run_context_parameters_are_a_registry_error() -> None:
    reg = AgentRegistry()

    async def twice(a: RunContext, b: RunContext) -> None:
        return None

    with pytest.raises(RegistryError, match="RunContext"):
        reg.add_tool(twice)


async def test_ctx_identity_is_the_runs_identity_or_the_bare_user(sink: BusSink) -> None:
    given = Identity("alice", roles={"analyst"}, claims={"team": "blue"})
    assert (await engine(sink, given).run("whoami", {})).output == {
        "user": "alice",
        "roles": ["analyst"],
    }
    assert (await engine(sink).run("whoami", {})).output == {"user": "alice", "roles": []}


def test_an_identity_of_another_user_is_refused(sink: BusSink) -> None:
    with pytest.raises(OwnershipError):
        engine(sink, Identity("mallory"))


async def test_without_a_resolver_a_secret_is_none(sink: BusSink) -> None:
    eng = engine(sink, secrets=None)
    assert await eng.run_context.secret("KEY") is None
    assert not eng.redactor


async def test_a_failing_resolver_ends_the_run_with_secret_unavailable(sink: BusSink) -> None:
    async def broken(identity: Identity, name: str) -> str | None:
        raise SecretUnavailable(name, "the vault is sealed")

    outcome = await engine(sink, secrets=broken).run("streamer", {})
    assert outcome.error is not None
    assert outcome.error["type"] == "secret_unavailable"
    assert "KEY" in outcome.error["message"]


def test_roles_gate_visibility_and_survive_include() -> None:
    reg = registry()
    assert [a.name for a in reg.agents_for(set())] == ["streamer", "tooling", "whoami"]
    assert "gated" in [a.name for a in reg.agents_for({"analyst", "x"})]
    copy = AgentRegistry()
    copy.include(reg)
    assert copy.get_agent("gated").roles == {"analyst"}
    with pytest.raises(RegistryError, match="set of role names"):
        AgentRegistry().add_agent(
            registry().get_agent("gated").func, name="x", input_model=Script, roles="analyst"
        )


async def test_log_lines_of_a_runs_task_are_masked(sink: BusSink) -> None:
    """A line the agent logs with its key goes out masked (message, args and traceback);
    a line logged outside the run's tasks is left alone."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(SecretLogFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.secret.logs")
    logger.addHandler(handler)
    logger.propagate = False
    reg = AgentRegistry()

    @reg.agent("logger", input_model=Script)
    async def log_it(ctx: RunContext, _script: Script) -> None:
        key = await ctx.secret("KEY")
        logger.warning("using %s", key)

        async def child() -> None:  # a task the agent starts inherits the masking
            try:
                raise RuntimeError(f"refused {key}")
            except RuntimeError:
                logger.exception("child failed")

        await asyncio.get_running_loop().create_task(child())

    try:
        eng = ExecutionEngineFactory(reg, secrets=resolve).create_engine(new_ctx("alice"), sink)
        await eng.run("logger", {})
        logger.warning("outside %s", KEY)
    finally:
        logger.removeHandler(handler)
    lines = [handler.format(r) for r in records]
    assert lines[0] == f"using {REDACTED}"
    assert lines[1].startswith("child failed")
    assert f"refused {REDACTED}" in lines[1]
    assert KEY not in "\n".join(lines[:2])
    assert lines[2] == f"outside {KEY}"
