"""The checker on the fixtures: every leak found at its line with its code, no safe pattern
flagged (library calls; the CLI is tested in test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.check import check_file, check_paths
from support_check import FIXTURES, LEAKS, SAFE, expected


@pytest.mark.parametrize("path", LEAKS, ids=lambda p: p.name)
def test_every_leak_is_found_at_its_line_with_its_code(path: Path) -> None:
    """Findings are exactly the fixture's ``# expect:`` markers: none missing, none extra."""
    markers = expected(path)
    assert markers, f"{path.name} marks no leak"
    assert sorted((f.line, f.code) for f in check_file(path)) == markers


@pytest.mark.parametrize("path", SAFE, ids=lambda p: p.name)
def test_no_safe_pattern_is_flagged(path: Path) -> None:
    assert expected(path) == []
    assert check_file(path) == []


def test_the_leak_fixtures_cover_every_code() -> None:
    codes = {code for path in LEAKS for _, code in expected(path)}
    assert codes == {"CR001", "CR002", "CR003", "CR004", "CR005"}


@pytest.mark.parametrize(
    ("fixture", "marker", "code", "name"),
    [
        ("engine_active_runs.py", "active_runs: dict", "CR002", "ExecutionEngine.active_runs"),
        ("history_list.py", "HISTORY: list", "CR001", "HISTORY"),
        ("cached_lookup.py", "@lru_cache(maxsize=1024)", "CR004", "user_profile"),
        ("mutable_default.py", "seen: list[str] = []", "CR005", "seen=[]"),
        ("connection_map.py", "connections: defaultdict", "CR002", "WebSocketBridge.connections"),
    ],
)
def test_the_seed_designs_leaks_are_found(fixture: str, marker: str, code: str, name: str) -> None:
    """The five leaks the seed design names, each at the line that holds it, named in the
    message together with what to do instead."""
    path = FIXTURES / "leaks" / fixture
    lines = path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if marker in text)
    hits = [f for f in check_file(path) if f.line == line and f.code == code]
    assert len(hits) == 1, check_file(path)
    message = hits[0].message
    assert f"`{name}`" in message
    assert any(advice in message for advice in ("RunContext", "not user data", "None"))


def test_findings_are_sorted_by_path_line_and_column() -> None:
    findings = check_paths([FIXTURES]).findings
    keys = [(f.path, f.line, f.col) for f in findings]
    assert keys == sorted(keys)
    assert len({f.path for f in findings}) == len(LEAKS)
