"""One pass over a module that records what the rules need: its imports, its functions with
their scopes, its classes, its module-level bindings, and every place run-time code changes
an object reached through a module-level name.

"Run time" means inside a function or lambda body: that code runs once per call, so once per
user's run. Statements at module level and in class bodies run once, at import, before any
user exists; populating a registry or a table there is start-up, not shared run state.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from corral.check.scopes import Function, FunctionNode, bound_names, scope_nodes
from corral.check.values import MUTATING_METHODS, import_table, root_name, snippet


@dataclass(frozen=True, slots=True)
class Mutation:
    """Run-time code changing the object a module-level ``name`` refers to."""

    name: str
    node: ast.expr  # where it happens
    how: str  # the source of the change, shortened


@dataclass(frozen=True, slots=True)
class Binding:
    """A module-level ``name = value`` (or ``name: T = value``)."""

    name: str
    target: ast.expr
    value: ast.expr


@dataclass(frozen=True, slots=True)
class ModuleModel:
    tree: ast.Module
    imports: dict[str, str]
    functions: tuple[Function, ...]
    classes: tuple[ast.ClassDef, ...]
    class_scopes: dict[ast.ClassDef, Function | None]  # the function each class is made in
    bindings: tuple[Binding, ...]
    other_bindings: frozenset[str]  # module names bound by def, class or import
    mutations: tuple[Mutation, ...]

    @classmethod
    def build(cls, tree: ast.Module) -> ModuleModel:
        walker = _Walker()
        walker.visit(tree)
        bindings, others = _module_bindings(tree)
        return cls(
            tree=tree,
            imports=import_table(tree),
            functions=tuple(walker.functions),
            classes=tuple(walker.classes),
            class_scopes=walker.class_scopes,
            bindings=bindings,
            other_bindings=others,
            mutations=tuple(walker.mutations),
        )

    def module_classes(self) -> dict[str, ast.ClassDef]:
        """Classes defined at module level, by name."""
        return {n.name: n for n in scope_nodes(self.tree.body) if isinstance(n, ast.ClassDef)}


def _module_bindings(tree: ast.Module) -> tuple[tuple[Binding, ...], frozenset[str]]:
    bindings: list[Binding] = []
    others: set[str] = set()
    for node in scope_nodes(tree.body):
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs = [(node.target, node.value)]
        elif isinstance(node, _DEFINITIONS):
            others |= bound_names(node)
        while pairs:
            target, value = pairs.pop(0)
            # ``a, b = [], {}`` binds element by element; other unpacking hides the values.
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                if len(target.elts) == len(value.elts):
                    pairs.extend(zip(target.elts, value.elts, strict=True))
            elif isinstance(target, ast.Name):
                bindings.append(Binding(target.id, target, value))
    return tuple(bindings), frozenset(others)


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


class _Walker(ast.NodeVisitor):
    """Walks a module once, keeping the stack of functions it is inside."""

    def __init__(self) -> None:
        self.functions: list[Function] = []
        self.classes: list[ast.ClassDef] = []
        self.class_scopes: dict[ast.ClassDef, Function | None] = {}
        self.mutations: list[Mutation] = []
        self._stack: list[Function] = []
        self._class: ast.ClassDef | None = None  # the class body being walked, if directly
        self._comprehension_targets: list[set[str]] = []

    # -- scopes ---------------------------------------------------------------------------

    def _enter(self, node: FunctionNode, body: list[ast.AST]) -> None:
        function = Function.of(node, self._stack[-1] if self._stack else None, self._class)
        self.functions.append(function)
        self._stack.append(function)
        outer_class, self._class = self._class, None
        for part in body:
            self.visit(part)
        self._class = outer_class
        self._stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_def(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_def(node)

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for part in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if part is not None:
                self.visit(part)
        self._enter(node, list(node.body))

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for part in [*node.args.defaults, *node.args.kw_defaults]:
            if part is not None:
                self.visit(part)
        self._enter(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node)
        self.class_scopes[node] = self._stack[-1] if self._stack else None
        for part in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(part)
        outer_class, self._class = self._class, node
        for statement in node.body:
            self.visit(statement)
        self._class = outer_class

    def _visit_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        targets = {
            n.id for gen in node.generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)
        }
        self._comprehension_targets.append(targets)
        self.generic_visit(node)
        self._comprehension_targets.pop()

    visit_ListComp = _visit_comprehension
    visit_SetComp = _visit_comprehension
    visit_DictComp = _visit_comprehension
    visit_GeneratorExp = _visit_comprehension

    # -- changes --------------------------------------------------------------------------

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        target = node.target
        if isinstance(target, ast.Attribute | ast.Subscript):
            self._changed(target, target, snippet(node))
            self.generic_visit(target)  # its parts, not the target again
        else:
            self.visit(target)
        self.visit(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._changed(node, node, _store_text(node))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._changed(node, node, _store_text(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
            self._changed(func.value, node, f"{snippet(func)}(…)")
        self.generic_visit(node)

    def _changed(self, target: ast.expr, node: ast.expr, how: str) -> None:
        if not self._stack:
            return  # import time: module level or a class body
        root = root_name(target)
        if root is None or any(root.id in t for t in self._comprehension_targets):
            return
        if self._stack[-1].owner_of(root.id) is None:
            self.mutations.append(Mutation(root.id, node, how))


def _store_text(node: ast.Attribute | ast.Subscript) -> str:
    if isinstance(node.ctx, ast.Del):
        return f"del {snippet(node)}"
    return f"{snippet(node)} = …"
