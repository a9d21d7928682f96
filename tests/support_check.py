"""Helpers of the ``corral check`` tests: the fixtures' expectations and the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "check" / "fixtures"
LEAKS = sorted((FIXTURES / "leaks").glob("*.py"))
SAFE = sorted((FIXTURES / "safe").glob("*.py"))
LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<code>[A-Z]+\d{3}) (?P<msg>.+)$")
_EXPECT = re.compile(r"# expect: (?P<codes>CR\d{3}(?:, CR\d{3})*)")


def expected(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` for every ``# expect: CODE[, CODE]`` marker in a fixture, sorted."""
    found = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        match = _EXPECT.search(text)
        if match:
            found.extend((number, code) for code in match.group("codes").split(", "))
    return sorted(found)


def corral_check(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python -m corral.cli check ARGS`` as a child process."""
    return subprocess.run(
        [sys.executable, "-m", "corral.cli", "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def parsed_lines(stdout: str) -> list[tuple[str, int, int, str, str]]:
    """The text report's lines as ``(path, line, col, code, message)``; every line must
    have the ``path:line:col: CODE message`` shape."""
    rows = []
    for text in stdout.splitlines():
        match = LINE.match(text)
        assert match, f"not a finding line: {text!r}"
        rows.append(
            (
                match["path"],
                int(match["line"]),
                int(match["col"]),
                match["code"],
                match["msg"],
            )
        )
    return rows
