"""What ``corral check`` reports: one :class:`Finding` per place, under a stable code.

Codes never change meaning; docs/check.md shows a leak and its fix for each.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from types import MappingProxyType

# Code → what it reports (one line, used in docs and ``--help``-style listings).
CODES: MappingProxyType[str, str] = MappingProxyType(
    {
        "CR001": "module-level mutable object mutated at run time",
        "CR002": "class-level mutable attribute, or a class attribute written at run time",
        "CR003": "write through global or nonlocal to state that outlives one run",
        "CR004": "cache on a function whose arguments carry user data",
        "CR005": "mutable default argument",
        "E902": "a file that cannot be read",
        "E999": "a file that does not parse",
    }
)

# What to do instead, appended to each message so every line is actionable on its own.
PER_RUN = "keep per-run state on the RunContext or pass it explicitly"
IMMUTABLE = "make it a tuple, frozenset or MappingProxyType (or a frozen dataclass)"
ACCEPT_HINT = "`# corral: shared-ok <reason>` accepts it"


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One reported place. ``line`` and ``col`` are 1-based; ``col`` counts characters."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def as_text(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"

    def as_json(self) -> dict[str, str | int]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "code": self.code,
            "message": self.message,
        }

    @property
    def is_error(self) -> bool:
        """A file that could not be checked at all (exit status 2), not a finding about it."""
        return self.code.startswith("E")


@dataclass(frozen=True, slots=True)
class Issue:
    """What a rule reports: a node and a message. The checker turns it into a
    :class:`Finding` with the file's path and a character column."""

    node: ast.stmt | ast.expr
    code: str
    message: str
