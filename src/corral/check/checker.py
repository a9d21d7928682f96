"""Checking one module's source: parse it, run every rule, place and filter the findings."""

from __future__ import annotations

import ast
import warnings

from corral.check.accept import MISSING_REASON, acceptances
from corral.check.class_state import class_state_issues
from corral.check.findings import Finding, Issue
from corral.check.functions import function_issues
from corral.check.model import ModuleModel
from corral.check.module_state import module_state_issues
from corral.check.rebinding import rebinding_issues


def parse(source: str, path: str) -> ast.Module:
    """``source`` as a module; raises :class:`SyntaxError` (also for a NUL byte, which the
    parser reports as :class:`ValueError` on Python 3.11)."""
    try:
        with warnings.catch_warnings():
            # An invalid escape in a string is the checked code's business, not ours; under
            # ``-W error`` it would otherwise turn a parsable file into a crash.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return ast.parse(source, filename=path)
    except ValueError as exc:
        raise SyntaxError(str(exc), (path, 1, 1, "")) from None


def check_source(source: str, path: str = "<source>") -> list[Finding]:
    """The findings in ``source``, sorted by line and column, accepted ones left out.

    Raises :class:`SyntaxError` when ``source`` does not parse. Pure: it runs no code of the
    checked module and keeps nothing between calls.
    """
    tree = parse(source, path)
    model = ModuleModel.build(tree)
    issues = [
        *module_state_issues(model),
        *class_state_issues(model),
        *rebinding_issues(model),
        *function_issues(model),
    ]
    accepted = acceptances(source)
    lines = source.splitlines()
    findings: set[Finding] = set()
    for issue in issues:
        line = issue.node.lineno
        message = issue.message
        if line in accepted:
            if accepted[line]:
                continue
            message += MISSING_REASON
        findings.add(Finding(path, line, _column(lines, issue), issue.code, message))
    return sorted(findings)


def _column(lines: list[str], issue: Issue) -> int:
    """1-based character column: ``ast`` counts UTF-8 bytes from 0."""
    index = issue.node.lineno - 1
    if not 0 <= index < len(lines):
        return issue.node.col_offset + 1
    prefix = lines[index].encode("utf-8")[: issue.node.col_offset]
    return len(prefix.decode("utf-8", errors="replace")) + 1
