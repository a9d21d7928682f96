"""``corral check`` on real code: corral's own agents, the README's examples, the leaks and fixes
of docs/check.md, and the pre-commit hook as pre-commit would run it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from corral.check import check_source
from support_check import FIXTURES, REPO, corral_check

README = (REPO / "README.md").read_text()
DOCS = (REPO / "docs" / "check.md").read_text()
_ACCEPT = re.compile(r"  # corral: shared-ok [^\n]*")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _check_section(text: str) -> str:
    return text.split("## Check your agents for shared state", 1)[1].split("\n## ", 1)[0]


def test_corral_own_agents_have_no_findings() -> None:
    result = corral_check("src/corral/agents")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_every_python_example_in_the_readme_has_no_findings() -> None:
    """The walkthrough client, the custom agent and the check section's accepted example."""
    blocks = _blocks(README, "python")
    assert len(blocks) >= 3
    for block in blocks:
        assert check_source(block, "README.md") == [], block


def test_the_readme_example_line_is_what_the_check_prints(tmp_path: Path) -> None:
    """Without its ``shared-ok`` comment, the README's accepted example gives exactly the
    README's (and docs/check.md's) example output line."""
    section = _check_section(README)
    [example] = _blocks(section, "python")
    [shown] = _blocks(section, "text")
    assert _ACCEPT.search(example), "the example shows the acceptance comment"
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "notes.py").write_text(_ACCEPT.sub("", example))
    result = corral_check("agents/notes.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == shown
    assert shown in _blocks(DOCS, "text")


@pytest.mark.parametrize("code", ["CR001", "CR002", "CR003", "CR004", "CR005"])
def test_each_documented_leak_is_found_and_its_fix_is_clean(code: str) -> None:
    section = DOCS.split(f"\n## {code}:", 1)[1].split("\n## ", 1)[0]
    leak, fix = _blocks(section, "python")[:2]
    assert {f.code for f in check_source(leak)} == {code}
    assert check_source(fix) == []


def test_the_pre_commit_hook_runs_the_check_as_pre_commit_would() -> None:
    """``.pre-commit-hooks.yaml`` declares ``corral-check``; its entry, given file names the
    way pre-commit passes them, exits 1 on a leak and 0 on safe code."""
    [hook] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "corral-check"
    assert hook["language"] == "python"
    assert hook["types"] == ["python"]
    command = shlex.split(hook["entry"])
    assert command == ["corral", "check"]
    corral = Path(sys.executable).with_name("corral")

    def run(*files: Path) -> int:
        argv = [str(corral), *command[1:], *map(str, files)]
        return subprocess.run(argv, capture_output=True, timeout=60).returncode

    assert run(*sorted((FIXTURES / "safe").glob("*.py"))) == 0
    assert run(FIXTURES / "leaks" / "history_list.py", FIXTURES / "safe" / "registry.py") == 1
