"""CR001: a module-level mutable object that run-time code changes.

A module-level list, dict or set (or any object made by a call) lives as long as the process,
and every user's run reaches the same one. Only objects that some function or lambda visibly
changes are reported (``.append``, ``[k] = v``, ``del x[k]``, ``.update``, ``x.attr = v``…):
a table that is only read is a constant, and populating it at module level happens once, at
import, before any user exists. Loggers, locks, ``ContextVar`` objects, compiled patterns and
immutable collections are never reported.
"""

from __future__ import annotations

from corral.check.findings import IMMUTABLE, PER_RUN, Issue
from corral.check.model import Binding, ModuleModel, Mutation
from corral.check.values import shared_kind


def module_state_issues(model: ModuleModel) -> list[Issue]:
    """One issue per module-level object that run-time code changes, at its definition."""
    candidates: dict[str, tuple[Binding, str]] = {}
    for binding in model.bindings:
        if binding.name in model.other_bindings or binding.name in candidates:
            continue
        kind = shared_kind(binding.value, model.imports)
        if kind is not None:
            candidates[binding.name] = (binding, kind)
    changes: dict[str, list[Mutation]] = {}
    for mutation in model.mutations:
        if mutation.name in candidates:
            changes.setdefault(mutation.name, []).append(mutation)
    issues: list[Issue] = []
    for name, found in changes.items():
        binding, kind = candidates[name]
        found.sort(key=lambda m: (m.node.lineno, m.node.col_offset))
        first = found[0]
        more = f" and {len(found) - 1} more place(s)" if len(found) > 1 else ""
        if kind == "object":
            what = f"object `{name}`"
            instead = (
                f"{PER_RUN} (a per-request value as an argument of the call), and leave "
                "shared objects as the app's start-up made them"
            )
        else:
            what = f"{kind} `{name}`"
            instead = f"{PER_RUN}, or {IMMUTABLE} if it is a constant"
        issues.append(
            Issue(
                binding.target,
                "CR001",
                f"module-level {what} is changed at run time (line {first.node.lineno}: "
                f"`{first.how}`{more}), so every user's run shares it; {instead}",
            )
        )
    return issues
