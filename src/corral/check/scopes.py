"""Python's scoping rules, statically: which names a function binds, and where a name used in a
function lives (its own frame, an enclosing function's, or the module).

A checker must know that ``cache[k] = v`` touches the module's ``cache`` only when no
parameter, assignment, import or loop in the function (or an enclosing one) binds ``cache``.
Pure functions over :mod:`ast`; no state.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def scope_nodes(roots: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node evaluated in the scope that ``roots`` belong to, without entering nested
    scopes. A nested ``def``/``class``/``lambda`` is yielded itself (its name binds here), with
    the parts of it evaluated here (decorators, defaults, bases); comprehension targets are
    left out (they bind in the comprehension), a walrus inside one is not (it binds here)."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(node.decorator_list)
            stack.extend(_defaults(node.args))
        elif isinstance(node, ast.Lambda):
            stack.extend(_defaults(node.args))
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.decorator_list)
            stack.extend(node.bases)
            stack.extend(k.value for k in node.keywords)
        elif isinstance(node, _COMPREHENSIONS):
            for gen in node.generators:
                stack.append(gen.iter)
                stack.extend(gen.ifs)
            if isinstance(node, ast.DictComp):
                stack.extend((node.key, node.value))
            else:
                stack.append(node.elt)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


def parameters(args: ast.arguments) -> list[ast.arg]:
    """Every parameter, in order: positional-only, positional, ``*args``, keyword-only,
    ``**kwargs``."""
    found = [*args.posonlyargs, *args.args]
    if args.vararg:
        found.append(args.vararg)
    found.extend(args.kwonlyargs)
    if args.kwarg:
        found.append(args.kwarg)
    return found


def bound_names(node: ast.AST) -> set[str]:
    """Names that ``node`` (one statement or expression) binds in its own scope."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
        return {node.id}
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.ExceptHandler) and node.name:
        return {node.name}
    if isinstance(node, ast.Import):
        return {a.asname or a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names if a.name != "*"}
    if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
        return {node.name}
    if isinstance(node, ast.MatchMapping) and node.rest:
        return {node.rest}
    return set()


@dataclass(eq=False)
class Function:
    """One function or lambda and what its scope binds."""

    node: FunctionNode
    parent: Function | None  # the nearest enclosing function (class bodies are skipped)
    cls: ast.ClassDef | None  # the class whose body defines it directly (a method)
    written: frozenset[str]  # names its body binds, including global/nonlocal ones
    imported_only: frozenset[str]  # names of ``written`` that only an import binds
    local: frozenset[str]  # names of its own frame: parameters and written, less declared
    globals: dict[str, ast.Global] = field(default_factory=dict)
    nonlocals: dict[str, ast.Nonlocal] = field(default_factory=dict)

    @classmethod
    def of(
        cls, node: FunctionNode, parent: Function | None, owner: ast.ClassDef | None
    ) -> Function:
        body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
        written: set[str] = set()
        assigned: set[str] = set()
        declared_global: dict[str, ast.Global] = {}
        declared_nonlocal: dict[str, ast.Nonlocal] = {}
        for inner in scope_nodes(body):
            names = bound_names(inner)
            written |= names
            if not isinstance(inner, ast.Import | ast.ImportFrom):
                assigned |= names
            if isinstance(inner, ast.Global):
                declared_global.update(dict.fromkeys(inner.names, inner))
            elif isinstance(inner, ast.Nonlocal):
                declared_nonlocal.update(dict.fromkeys(inner.names, inner))
        params = {a.arg for a in parameters(node.args)}
        local = (params | written) - declared_global.keys() - declared_nonlocal.keys()
        return cls(
            node=node,
            parent=parent,
            cls=owner,
            written=frozenset(written),
            imported_only=frozenset(written - assigned),
            local=frozenset(local),
            globals=declared_global,
            nonlocals=declared_nonlocal,
        )

    @property
    def name(self) -> str:
        return "<lambda>" if isinstance(self.node, ast.Lambda) else self.node.name

    def owner_of(self, name: str) -> Function | None:
        """The function whose frame holds ``name`` as seen from here; None for the module (or
        a builtin)."""
        scope: Function | None = self
        while scope is not None:
            if name in scope.globals:
                return None
            if name in scope.local:
                return scope
            scope = scope.parent
        return None

    def chain_to(self, owner: Function) -> list[Function]:
        """This function and its enclosing ones up to, not including, ``owner``."""
        chain: list[Function] = []
        scope: Function | None = self
        while scope is not None and scope is not owner:
            chain.append(scope)
            scope = scope.parent
        return chain
