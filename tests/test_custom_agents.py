"""`corral serve --agents mymodule` serves a user's own agents, from the current folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from corral.errors import ConfigurationError
from corral.loading import load_agents
from support import spawn_server

MODULE = """
from pydantic import BaseModel
from corral import AgentRegistry

registry = AgentRegistry()

@registry.tool(description="Shout.")
async def shout(text: str) -> str:
    return text.upper()

class In(BaseModel):
    text: str

@registry.agent("shouter", input_model=In, description="Shouts.")
async def shouter(ctx, input: In) -> dict:
    return {"loud": await ctx.tools.call("shout", text=input.text)}
"""


def test_serve_agents_module_from_the_current_folder(
    tmp_path: Path, server_processes: list
) -> None:
    """The README's `corral serve --agents mymodule`, run from the module's folder."""
    (tmp_path / "mymodule.py").write_text(MODULE)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        proc = spawn_server(
            tmp_path / ".corral", f"sqlite+aiosqlite:///{tmp_path}/c.db", "--agents", "mymodule"
        )
    finally:
        os.chdir(cwd)
    server_processes.append(proc)
    with httpx.Client(base_url=proc.url, headers=proc.headers("dana"), timeout=30) as http:
        assert [a["name"] for a in http.get("/v1/agents").json()] == ["shouter"]
        run = http.post("/v1/runs", json={"agent": "shouter", "input": {"text": "hi"}}).json()
        with http.stream("GET", f"/v1/runs/{run['run_id']}/stream") as stream:
            body = "".join(stream.iter_text())
        assert '"output":{"loud":"HI"}' in body


def test_console_script_finds_modules_in_the_current_folder(tmp_path: Path) -> None:
    """The installed `corral` script (not python -m) imports mymodule from the cwd."""
    (tmp_path / "mymodule.py").write_text(MODULE)
    script = Path(sys.executable).parent / "corral"
    code = (
        "from corral.loading import load_agents; print([a.name for a in load_agents(['mymodule'])])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "shouter" in out.stdout
    assert script.exists()


def test_unknown_module_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module_xyz'"):
        load_agents(["no_such_module_xyz"])
