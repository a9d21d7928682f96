"""Which functions are runs: agents and tools, whose frames are made once per run.

State created inside a run's frame — a local, a closure over it, a class or a cache defined in
the agent's body — belongs to that run alone, so the rules do not report it.
"""

from __future__ import annotations

import ast

from corral.check.scopes import Function, parameters
from corral.check.values import last_name

_RUN_DECORATORS = frozenset({"agent", "tool"})
_RUN_ANNOTATIONS = frozenset({"RunContext", "UserExecutionContext"})


def inside_a_run(function: Function | None) -> bool:
    """``function`` or one enclosing it is an agent or a tool, so its frame is per run."""
    scope: Function | None = function
    while scope is not None:
        if is_run_function(scope):
            return True
        scope = scope.parent
    return False


def is_run_function(function: Function) -> bool:
    """An agent or tool: decorated ``@….agent(…)``/``@….tool(…)``, or taking the run's
    context (a parameter annotated ``RunContext``, or a first parameter named ``ctx``)."""
    node = function.node
    if isinstance(node, ast.Lambda):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if last_name(target) in _RUN_DECORATORS:
            return True
    params = parameters(node.args)
    if params and params[0].arg == "ctx":
        return True
    return any(
        isinstance(n, ast.Name | ast.Attribute | ast.Constant)
        and _annotation_word(n) in _RUN_ANNOTATIONS
        for p in params
        if p.annotation is not None
        for n in ast.walk(p.annotation)
    )


def _annotation_word(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1]  # a string annotation: "RunContext"
    return ""
