"""The repository's own promises: lint, types, no shared mutable state, README ↔ CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO.parent / "shared" / "tools" / "shared_state_scan.py"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    """`ruff check` reports nothing on the package and the tests."""
    result = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """`mypy --strict` (configured in pyproject.toml) reports nothing on the package."""
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not SCAN.exists(), reason=f"{SCAN} is not beside this checkout")
def test_no_shared_mutable_state_in_the_package() -> None:
    """The shared-state scan finds no module- or class-level mutable state."""
    result = _run(sys.executable, str(SCAN), "src/corral")
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert last.startswith("0 place"), result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run ends with the exact test command the README's quickstart shows."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.S)
    assert block, "README.md has no quickstart code block"
    commands = [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2, f"the quickstart is exactly two commands, got {commands}"
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci, f"{commands[1]!r} is not in .ci/run"
    assert "corral serve" in commands[0]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_script_is_valid_bash() -> None:
    assert _run("bash", "-n", ".ci/run").returncode == 0


def test_every_third_party_import_of_the_package_is_a_declared_dependency() -> None:
    """What src/corral imports is in pyproject's dependencies — not merely installed because
    a test extra brought it (pydantic-settings once came only with llama-cpp-python)."""
    import ast
    import importlib.metadata as md
    import re as _re
    import sys as _sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def name_of(req: str) -> str:
        return _re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")

    declared = set()
    for dep in project["dependencies"]:
        declared.add(name_of(dep))
        # An extra we ask for (uvicorn[standard], sqlalchemy[asyncio]) brings its packages.
        extras = set(_re.findall(r"\[([^\]]*)\]", dep)[0].split(",")) if "[" in dep else set()
        for req in md.requires(name_of(dep)) or ():
            marker = _re.search(r"extra == [\"']([^\"']+)[\"']", req)
            if marker is None or marker.group(1) in extras:
                declared.add(name_of(req))
    # corral's own optional extras (not the test ones): their modules import them lazily, and
    # test_optional_packages_are_imported_only_by_their_modules keeps them there.
    for extra, deps in project["optional-dependencies"].items():
        if extra not in ("test", "llm-test"):
            declared.update(name_of(dep) for dep in deps)
    owners = md.packages_distributions()
    missing = set()
    for path in (REPO / "src" / "corral").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in _sys.stdlib_module_names or top == "corral":
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({path.relative_to(REPO)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_optional_packages_are_imported_only_by_their_modules() -> None:
    """OpenTelemetry (corral[otel]) is imported by corral/otel.py, and by corral/telemetry.py
    inside the check that it is installed — nowhere else, so tracing off never loads it."""
    import ast

    allowed = {"src/corral/otel.py", "src/corral/telemetry.py"}
    found = set()
    for path in (REPO / "src" / "corral").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "opentelemetry" for n in names):
                found.add(str(path.relative_to(REPO)))
    assert found == allowed
