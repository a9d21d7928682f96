"""Which files ``corral check PATH...`` reads, and reading them into findings.

A folder is searched recursively for ``*.py`` files, skipping hidden folders, ``__pycache__``,
``node_modules`` and virtual environments (a folder holding ``pyvenv.cfg``); symbolic links to
folders are not followed, so a link loop cannot make the walk endless. A file named directly
is checked whatever its suffix (pre-commit passes Python scripts without ``.py``).
"""

from __future__ import annotations

import os
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from corral.check.checker import check_source
from corral.check.findings import Finding
from corral.errors import CheckPathError

_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True, slots=True)
class CheckResult:
    findings: tuple[Finding, ...]
    files: int

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Files that could not be checked (E902 unreadable, E999 does not parse)."""
        return tuple(f for f in self.findings if f.is_error)


def python_files(paths: Iterable[Path]) -> list[Path]:
    """Every file to check, sorted and without repeats; raises :class:`CheckPathError` for a
    path that does not exist."""
    files: set[Path] = set()
    for path in paths:
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            files.update(_walk(path))
        else:
            raise CheckPathError(path)
    return sorted(files)


def _walk(folder: Path) -> Iterable[Path]:
    for root, folders, names in os.walk(folder):
        here = Path(root)
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".")
            and name not in _SKIPPED_FOLDERS
            and not (here / name / "pyvenv.cfg").exists()
        )
        # A broken link named *.py is not a Python file to report as unreadable.
        yield from (here / n for n in names if n.endswith(".py") and (here / n).is_file())


def check_file(path: Path) -> list[Finding]:
    """The findings of one file; a file that cannot be read or parsed gives one E902 or E999
    finding instead."""
    shown = str(path)
    try:
        # tokenize.open honours a BOM and a PEP 263 ``# -*- coding: … -*-`` line.
        with tokenize.open(path) as file:
            source = file.read()
    except OSError as exc:
        return [Finding(shown, 1, 1, "E902", f"cannot read the file: {exc.strerror or exc}")]
    except (UnicodeDecodeError, SyntaxError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.msg
        return [
            Finding(
                shown,
                1,
                1,
                "E902",
                f"cannot decode the file ({reason}); save it as UTF-8 or fix its coding line",
            )
        ]
    try:
        return check_source(source, shown)
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 1
        return [
            Finding(
                shown,
                line,
                col,
                "E999",
                f"syntax error: {exc.msg}; fix the file (or leave it out) and check again",
            )
        ]


def check_paths(paths: Iterable[Path]) -> CheckResult:
    """Check every Python file under ``paths``; raises :class:`CheckPathError` first if any
    path does not exist. Synchronous: it reads files; run it in a thread from async code."""
    files = python_files(paths)
    findings = [finding for path in files for finding in check_file(path)]
    return CheckResult(tuple(sorted(findings)), len(files))
