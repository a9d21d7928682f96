"""``@ag-ui/client``'s ``HttpAgent`` (from npm) run against corral, unchanged: the events it
reports, what ``runAgent`` resolves with, and the conversation it ends with.

The package is installed once into a cache folder (``CORRAL_TEST_CACHE``, default
``~/.cache/corral-tests``) with the pinned version of ``tests/clients/agui/package.json``;
without Node 20+ or npm the test skips — unless ``CORRAL_TEST_NODE=1`` (CI), which makes it a
failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, StartServer
from corral.agents import echo, research
from corral.agents.chat import register as register_chat
from corral.core.registry import AgentRegistry
from corral.llm import LLMSettings
from llm.servers import ScriptedModel, answer, serve_asgi

HERE = REPO / "tests" / "clients" / "agui"
NODE_REQUIRED_ENV = "CORRAL_TEST_NODE"
RUN_TIMEOUT_S = 90.0
TERMINAL = ("RUN_FINISHED", "RUN_ERROR")

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _unavailable(why: str) -> None:
    if os.environ.get(NODE_REQUIRED_ENV) == "1":
        pytest.fail(f"{NODE_REQUIRED_ENV}=1 but {why}")
    pytest.skip(f"{why}: the HttpAgent test needs Node 20+ and npm ({NODE_REQUIRED_ENV}=1 fails)")


@pytest.fixture(scope="module")
def agui_client() -> Path:
    """A folder holding httpagent.mjs beside node_modules/@ag-ui/client (installed once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node or npm is not on PATH")
        raise AssertionError("unreachable")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        _unavailable(f"node is {version.stdout.strip()}")
    manifest = (HERE / "package.json").read_text()
    pinned = json.loads(manifest)["dependencies"]["@ag-ui/client"]
    cache = Path(os.environ.get("CORRAL_TEST_CACHE", Path.home() / ".cache" / "corral-tests"))
    folder = cache / f"ag-ui-client-{pinned}"
    folder.mkdir(parents=True, exist_ok=True)
    installed = folder / "node_modules" / "@ag-ui" / "client" / "package.json"
    if not installed.exists() or (folder / "package.json").read_text() != manifest:
        (folder / "package.json").write_text(manifest)
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0 or not installed.exists():
            _unavailable(f"npm install @ag-ui/client@{pinned} failed:\n{result.stderr[-2000:]}")
    shutil.copy(HERE / "httpagent.mjs", folder / "httpagent.mjs")
    return folder


def chat_registry(base_url: str) -> AgentRegistry:
    registry = AgentRegistry()
    echo.register(registry)
    research.register(registry)
    settings = LLMSettings(base_url=base_url, model="stub", retries=0, delta_interval_s=0.0)
    register_chat(registry, settings)
    return registry


def types(scenario: dict[str, Any]) -> list[str]:
    return [e["type"] for e in scenario["events"]]


def check_run(scenario: dict[str, Any]) -> None:
    """What HttpAgent saw of one run: no error, RUN_STARTED first, one terminal event last."""
    assert scenario["error"] is None, scenario["error"]
    kinds = types(scenario)
    assert kinds[0] == "RUN_STARTED", kinds
    assert kinds[-1] in TERMINAL, kinds
    assert sum(k in TERMINAL for k in kinds) == 1, kinds


@sqlite_only
@pytest.mark.slow
async def test_http_agent_runs_corral_agents_unchanged(
    agui_client: Path, start_server: StartServer
) -> None:
    """echo (forwardedProps.input), research twice on one thread, a failing run, and chat
    twice on one thread (a scripted model): HttpAgent reports RUN_STARTED … RUN_FINISHED (or
    RUN_ERROR), resolves with corral's output, and ends with the conversation — the user's
    messages, the tool calls with their results, the assistant's answers."""
    model = ScriptedModel(answer("Hello", " Ada."), answer("You said ", "hi."))
    async with serve_asgi(model) as model_url:
        server = await start_server(chat_registry(f"{model_url}/v1"))
        env = {**os.environ, "CORRAL_URL": server.url, "CORRAL_TOKEN": server.token("agui-user")}
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            "httpagent.mjs",
            cwd=agui_client,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    # HttpAgent warns on the console about anything it had to drop, strip or could not place.
    warnings = err.decode()
    for sign in ("[ag-ui]", "nrecognised", "No message found", "not found", "Subscriber error"):
        assert sign not in warnings, warnings

    echo_run = result["echo"]
    check_run(echo_run)
    assert echo_run["result"]["result"] == {"message": "from HttpAgent", "steps": 2}
    assert types(echo_run).count("TOOL_CALL_START") == 2
    calls = [m for m in echo_run["messages"] if m["role"] == "assistant" and m.get("toolCalls")]
    results = [m for m in echo_run["messages"] if m["role"] == "tool"]
    assert [json.loads(m["content"]) for m in results] == [{"text": "from HttpAgent"}] * 2
    assert [c["toolCalls"][0]["id"] for c in calls] == [m["toolCallId"] for m in results]

    async with server.client("agui-user") as http:
        runs = (await http.get("/v1/runs", params={"limit": 10})).json()["runs"]
    outputs = {r["input"].get("question"): r["output"] for r in runs if r["agent"] == "research"}
    for name, question, value in (
        ("research1", "What is 12 * 7?", "84"),
        ("research2", "And what is 6 * 7?", "42"),
    ):
        scenario = result[name]
        check_run(scenario)
        assert scenario["result"]["result"] == outputs[question]
        assert value in scenario["result"]["result"]["answer"]
        last = scenario["messages"][-1]
        assert (last["role"], last["content"]) == ("assistant", outputs[question]["answer"])
    # The second run continues the conversation: both questions, both answers, in order.
    conversation = [
        (m["role"], m.get("content"))
        for m in result["research2"]["messages"]
        if m["role"] == "user" or (m["role"] == "assistant" and m.get("content"))
    ]
    assert conversation == [
        ("user", "What is 12 * 7?"),
        ("assistant", outputs["What is 12 * 7?"]["answer"]),
        ("user", "And what is 6 * 7?"),
        ("assistant", outputs["And what is 6 * 7?"]["answer"]),
    ]
    ids = [c["id"] for m in result["research2"]["messages"] for c in m.get("toolCalls") or []]
    assert len(ids) == len(set(ids)) >= 4  # every tool call of both runs, each once

    failed = result["failed"]
    assert failed["error"] is None
    assert types(failed)[-1] == "RUN_ERROR"
    assert failed["events"][-1]["code"] == "agent_failed"

    for name, expected in (("chat1", "Hello Ada."), ("chat2", "You said hi.")):
        scenario = result[name]
        check_run(scenario)
        assert scenario["result"]["result"]["answer"] == expected
        assert scenario["messages"][-1] == {
            **scenario["messages"][-1],
            "role": "assistant",
            "content": expected,
        }
    asked = [(m["role"], m["content"]) for m in model.requests[1].messages[1:]]
    assert asked == [
        ("user", "hi, I am Ada"),
        ("assistant", "Hello Ada."),
        ("user", "what did I say?"),
    ]
