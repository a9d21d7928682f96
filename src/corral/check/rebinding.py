"""CR003: writes through ``global`` or ``nonlocal`` to a variable that outlives one run.

``global x`` followed by ``x = …`` rebinds a module variable: one value for the whole process,
so for every user. It is always reported, except when only an ``import`` binds the name (a lazy
import binds the same module for everyone).

``nonlocal x`` is reported only when the variable outlives a run. A helper nested in an agent
that counts something for that run (``nonlocal seen; seen += 1``) writes to the agent's own
frame, which is made per run: that is per-run state done right and is not reported. The
variable outlives runs when the writing function escapes the call that created the variable —
it is decorated (``@registry.agent``, ``@functools.wraps``), returned, or stored in an
attribute or item — and that outer call is not itself a run (an agent or tool: a function
decorated ``@….agent``/``@….tool``, or taking the run's ``ctx``). Passing a helper as an
argument (``map(add, xs)``) is not counted as escaping: it usually serves the current call,
and reporting it would cost more false alarms than it finds leaks.
"""

from __future__ import annotations

import ast

from corral.check.findings import PER_RUN, Issue
from corral.check.model import ModuleModel
from corral.check.runs import inside_a_run
from corral.check.scopes import Function, scope_nodes
from corral.check.values import snippet


def rebinding_issues(model: ModuleModel) -> list[Issue]:
    issues: list[Issue] = []
    for function in model.functions:
        for name, statement in function.globals.items():
            # ``global json; import json`` (a lazy import) binds a module: the same object
            # for everyone, not state.
            if name in function.written and name not in function.imported_only:
                issues.append(
                    Issue(
                        statement,
                        "CR003",
                        f"`global {name}` in `{function.name}` rebinds module-level `{name}`, "
                        f"one value for every user's run; {PER_RUN}, and create shared "
                        "clients once in the app's lifespan",
                    )
                )
        for name, declaration in function.nonlocals.items():
            issue = _nonlocal_issue(function, name, declaration)
            if issue is not None:
                issues.append(issue)
    return issues


def _nonlocal_issue(function: Function, name: str, statement: ast.Nonlocal) -> Issue | None:
    if name not in function.written or function.parent is None:
        return None
    owner = function.parent.owner_of(name)
    if owner is None or inside_a_run(owner):
        return None
    for inner in function.chain_to(owner):
        how = _escape(inner)
        if how is not None:
            return Issue(
                statement,
                "CR003",
                f"`nonlocal {name}` in `{function.name}` writes to a variable of "
                f"`{owner.name}` that outlives one run (`{inner.name}` is {how}), so every "
                f"user's run shares it; {PER_RUN}",
            )
    return None


def _escape(function: Function) -> str | None:
    """How ``function`` outlives the call of its enclosing function, if it visibly does."""
    node = function.node
    if isinstance(node, ast.Lambda) or function.parent is None:
        return None
    if node.decorator_list:
        decorator = node.decorator_list[0]
        if isinstance(decorator, ast.Call):
            return f"decorated with `@{snippet(decorator.func, 40)}(…)`"
        return f"decorated with `@{snippet(decorator, 40)}`"
    parent = function.parent.node
    body: list[ast.AST] = [parent.body] if isinstance(parent, ast.Lambda) else list(parent.body)
    for statement in scope_nodes(body):
        if isinstance(statement, ast.Return | ast.Yield | ast.YieldFrom):
            if _mentions(statement.value, node.name):
                return f"returned by `{function.parent.name}`"
        elif (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Attribute | ast.Subscript) for t in statement.targets)
            and _mentions(statement.value, node.name)
        ):
            return f"stored by `{function.parent.name}`"
    return None


def _mentions(expr: ast.expr | None, name: str) -> bool:
    """``expr`` is ``name`` itself or a collection holding it. An argument of a call does not
    count: ``return await attempt(deliver)`` hands ``deliver`` to a call that ends first."""
    if isinstance(expr, ast.Name):
        return expr.id == name
    if isinstance(expr, ast.Starred | ast.Await):
        return _mentions(expr.value, name)
    if isinstance(expr, ast.Tuple | ast.List | ast.Set):
        return any(_mentions(e, name) for e in expr.elts)
    if isinstance(expr, ast.Dict):
        return any(_mentions(v, name) for v in expr.values)
    return False
