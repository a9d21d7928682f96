"""``corral check`` as a user runs it: the real CLI in a child process, its output formats
and its exit status (0 clean, 1 findings, 2 bad usage or a file that cannot be checked)."""

from __future__ import annotations

import json
from pathlib import Path

from support_check import FIXTURES, LEAKS, REPO, corral_check, expected, parsed_lines

SOURCE = """\
_seen: dict[str, str] = {}COMMENT


def remember(user_id: str, text: str) -> None:
    _seen[user_id] = text
"""


def _source(comment: str) -> str:
    return SOURCE.replace("COMMENT", comment)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_clean_code_exits_0_and_prints_no_finding() -> None:
    result = corral_check(FIXTURES / "safe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "no state shared between users found in 5 files" in result.stderr


def test_findings_exit_1_with_one_sorted_line_each() -> None:
    """Every marked leak is one ``path:line:col: CODE message`` line, sorted by path and line,
    and each message says what to do instead."""
    result = corral_check("tests/check/fixtures/leaks")
    assert result.returncode == 1, result.stderr
    rows = parsed_lines(result.stdout)
    assert [(p, line, col) for p, line, col, _, _ in rows] == sorted(
        (p, line, col) for p, line, col, _, _ in rows
    )
    want = sorted(
        (str(path.relative_to(REPO)), line, code) for path in LEAKS for line, code in expected(path)
    )
    assert sorted((p, line, code) for p, line, _, code, _ in rows) == want
    assert all("; " in msg for *_, msg in rows)
    assert f"{len(want)} finding(s) in {len(LEAKS)} files" in result.stderr


def test_folders_are_searched_recursively(tmp_path: Path) -> None:
    """Nested packages are read; hidden folders, ``__pycache__``, virtual environments and
    broken links are not."""
    _write(tmp_path, "agents/deep/er/leak.py", "def f(x=[]):\n    return x\n")
    _write(tmp_path, "agents/.hidden/leak.py", "def f(x=[]):\n    return x\n")
    _write(tmp_path, "agents/__pycache__/leak.py", "def f(x=[]):\n    return x\n")
    _write(tmp_path, "venv/pyvenv.cfg", "home = /usr/bin\n")
    _write(tmp_path, "venv/lib/leak.py", "def f(x=[]):\n    return x\n")
    _write(tmp_path, "agents/notes.txt", "def f(x=[]): pass\n")
    (tmp_path / "agents" / "gone.py").symlink_to(tmp_path / "missing.py")
    result = corral_check(".", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = parsed_lines(result.stdout)
    assert [(p, line, col, code) for p, line, col, code, _ in rows] == [
        ("agents/deep/er/leak.py", 1, 9, "CR005")
    ]
    assert "in 1 file" in result.stderr


def test_a_file_named_directly_is_checked_whatever_its_name(tmp_path: Path) -> None:
    """pre-commit passes Python scripts without a ``.py`` suffix."""
    script = _write(tmp_path, "run-agent", "#!/usr/bin/env python3\ndef f(x={}):\n    return x\n")
    result = corral_check(script)
    assert result.returncode == 1
    assert parsed_lines(result.stdout)[0][1:4] == (2, 9, "CR005")


def test_json_lists_the_same_findings_as_text() -> None:
    text = corral_check(FIXTURES)
    as_json = corral_check("--format", "json", FIXTURES)
    assert as_json.returncode == 1
    findings = json.loads(as_json.stdout)
    assert isinstance(findings, list)
    assert findings, "the leak fixtures must give findings"
    assert all(set(f) == {"path", "line", "col", "code", "message"} for f in findings)
    assert [
        (f["path"], f["line"], f["col"], f["code"], f["message"]) for f in findings
    ] == parsed_lines(text.stdout)


def test_json_of_clean_code_is_an_empty_list() -> None:
    result = corral_check("--format", "json", FIXTURES / "safe")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_acceptance_comment_with_a_reason_accepts_the_finding(tmp_path: Path) -> None:
    plain = _write(tmp_path, "plain.py", _source(""))
    accepted = _write(
        tmp_path,
        "accepted.py",
        _source("  # corral: shared-ok holds model names, no user data"),
    )
    assert corral_check(plain).returncode == 1
    result = corral_check(accepted)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_acceptance_comment_without_a_reason_accepts_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, "bare.py", _source("  # corral: shared-ok"))
    result = corral_check(path)
    assert result.returncode == 1
    [(_, line, _, code, message)] = parsed_lines(result.stdout)
    assert (line, code) == (1, "CR001")
    assert "accepts it only with a reason" in message


def test_acceptance_comment_on_another_line_accepts_nothing(tmp_path: Path) -> None:
    source = "# corral: shared-ok filled once at start-up\n" + _source("")
    result = corral_check(_write(tmp_path, "above.py", source))
    assert result.returncode == 1
    assert [row[1:4] for row in parsed_lines(result.stdout)] == [(2, 1, "CR001")]


def test_a_file_that_does_not_parse_exits_2_and_the_rest_is_still_checked(
    tmp_path: Path,
) -> None:
    _write(tmp_path, "broken.py", "x = 1\ndef f(:\n    pass\n")
    _write(tmp_path, "leak.py", "def f(x=[]):\n    return x\n")
    result = corral_check(".", cwd=tmp_path)
    assert result.returncode == 2
    rows = parsed_lines(result.stdout)
    assert [(p, line, code) for p, line, _, code, _ in rows] == [
        ("broken.py", 2, "E999"),
        ("leak.py", 1, "CR005"),
    ]
    assert rows[0][4].startswith("syntax error: ")
    assert "1 file(s) could not be checked" in result.stderr


def test_a_file_that_is_not_text_exits_2(tmp_path: Path) -> None:
    _write(tmp_path, "latin.py", "name = 'caf\xe9'\n".encode("latin-1"))
    _write(tmp_path, "nul.py", b"x = 1\x00\n")
    result = corral_check(".", cwd=tmp_path)
    assert result.returncode == 2
    assert [(p, code) for p, _, _, code, _ in parsed_lines(result.stdout)] == [
        ("latin.py", "E902"),
        ("nul.py", "E999"),
    ]


def test_a_missing_path_exits_2_and_names_it(tmp_path: Path) -> None:
    result = corral_check(FIXTURES / "safe", tmp_path / "nowhere")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in result.stderr


def test_no_path_exits_2() -> None:
    result = corral_check()
    assert result.returncode == 2
    assert "PATH" in result.stderr


def test_an_unknown_format_exits_2() -> None:
    result = corral_check("--format", "xml", FIXTURES / "safe")
    assert result.returncode == 2
    assert "--format is text or json" in result.stderr
