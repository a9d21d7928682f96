"""What a Python expression is, as far as sharing goes: a mutable container, a safe shared
object (logger, lock, ``ContextVar``), an object of unknown type, or an immutable value.

Names are resolved through the module's imports, so ``from collections import defaultdict``,
``import collections as c; c.defaultdict`` and ``collections.defaultdict`` are one thing.
Pure functions over :mod:`ast`; no state.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from types import MappingProxyType

# Constructors whose result is a mutable container.
MUTABLE_CONSTRUCTORS = frozenset(
    {
        "dict",
        "list",
        "set",
        "bytearray",
        "collections.defaultdict",
        "collections.OrderedDict",
        "collections.deque",
        "collections.Counter",
        "collections.ChainMap",
        "collections.UserDict",
        "collections.UserList",
        "weakref.WeakValueDictionary",
        "weakref.WeakKeyDictionary",
        "weakref.WeakSet",
        "array.array",
    }
)

# Objects that are meant to be shared by a whole process and carry no user data: loggers,
# synchronisation primitives, context variables (their value is per task, not per process),
# compiled patterns, immutable collections and typing helpers. Deliberately absent:
# ``threading.local`` — asyncio runs every user's task on one thread, so it is shared.
SAFE_CONSTRUCTORS = frozenset(
    {
        "logging.getLogger",
        "structlog.get_logger",
        "structlog.getLogger",
        "threading.Lock",
        "threading.RLock",
        "threading.Semaphore",
        "threading.BoundedSemaphore",
        "threading.Event",
        "threading.Condition",
        "threading.Barrier",
        "asyncio.Lock",
        "asyncio.Semaphore",
        "asyncio.BoundedSemaphore",
        "asyncio.Event",
        "asyncio.Condition",
        "contextvars.ContextVar",
        "re.compile",
        "frozenset",
        "tuple",
        "types.MappingProxyType",
        "typing.TypeVar",
        "typing.ParamSpec",
        "typing.NewType",
        "typing.NamedTuple",
        "collections.namedtuple",
    }
)

# Class-level calls that declare a per-instance field (dataclasses, attrs, pydantic, msgspec,
# SQLAlchemy): the object they return describes the field; instances get their own value.
FIELD_DECLARATIONS = frozenset(
    {
        "field",
        "Field",
        "Factory",
        "PrivateAttr",
        "ib",
        "attrib",
        "mapped_column",
        "Column",
        "relationship",
        "column_property",
    }
)

# Methods that change the container (or object) they are called on.
MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "remove",
        "pop",
        "clear",
        "sort",
        "reverse",
        "update",
        "setdefault",
        "popitem",
        "add",
        "discard",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
        "appendleft",
        "extendleft",
        "popleft",
        "rotate",
        "subtract",
        "move_to_end",
        "__setitem__",
        "__delitem__",
        "__iadd__",
    }
)

_LITERAL_KINDS: Mapping[type[ast.AST], str] = MappingProxyType(
    {
        ast.List: "list",
        ast.Dict: "dict",
        ast.Set: "set",
        ast.ListComp: "list",
        ast.DictComp: "dict",
        ast.SetComp: "set",
    }
)


def import_table(tree: ast.Module) -> dict[str, str]:
    """Local name → dotted name it was imported as, for every import anywhere in ``tree``.

    Imports inside functions count too: a checker reads, it does not run, and a name imported
    in one function and used in another is rare enough not to matter.
    """
    table: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    table[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    table[top] = top
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                table[alias.asname or alias.name] = f"{module}.{alias.name}".lstrip(".")
    return table


def dotted(expr: ast.expr, imports: Mapping[str, str]) -> str | None:
    """``a.b.c`` with ``a`` replaced by what it was imported as; None for anything else."""
    if isinstance(expr, ast.Name):
        return imports.get(expr.id, expr.id)
    if isinstance(expr, ast.Attribute):
        base = dotted(expr.value, imports)
        return None if base is None else f"{base}.{expr.attr}"
    return None


def callee(expr: ast.expr, imports: Mapping[str, str]) -> str | None:
    """The dotted name called by ``expr`` when it is a call, else None."""
    return dotted(expr.func, imports) if isinstance(expr, ast.Call) else None


def mutable_kind(expr: ast.expr | None, imports: Mapping[str, str]) -> str | None:
    """``"list"``, ``"dict"``, ``"collections.defaultdict"``… when ``expr`` builds a mutable
    container; None otherwise."""
    if expr is None:
        return None
    literal = _LITERAL_KINDS.get(type(expr))
    if literal is not None:
        return literal
    name = callee(expr, imports)
    if name is not None and name in MUTABLE_CONSTRUCTORS:
        return name.rsplit(".", 1)[-1]
    return None


def is_safe_object(expr: ast.expr | None, imports: Mapping[str, str]) -> bool:
    """``expr`` makes a logger, lock, ``ContextVar``, pattern or immutable collection."""
    return expr is not None and callee(expr, imports) in SAFE_CONSTRUCTORS


def shared_kind(expr: ast.expr | None, imports: Mapping[str, str]) -> str | None:
    """What a module- or class-level binding to ``expr`` may hold that run-time code can
    change: a container kind, ``"object"`` for the result of any other call (its type is
    unknown, so only a visible mutation makes it a finding), or None (immutable or safe)."""
    kind = mutable_kind(expr, imports)
    if kind is not None:
        return kind
    if isinstance(expr, ast.Call) and not is_safe_object(expr, imports):
        return "object"
    return None


def root_name(expr: ast.expr) -> ast.Name | None:
    """The name at the bottom of ``a.b[c].d``: ``a``; None when a call or literal is in the way
    (``f().x`` changes whatever ``f`` returned, which may be fresh)."""
    while isinstance(expr, ast.Attribute | ast.Subscript):
        expr = expr.value
    return expr if isinstance(expr, ast.Name) else None


def snippet(node: ast.AST, limit: int = 60) -> str:
    """Source text of ``node`` on one line, shortened to ``limit`` characters."""
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def is_field_declaration(expr: ast.expr | None) -> bool:
    """``field(default_factory=list)``, ``Field(...)``, ``attr.ib(...)``, ``mapped_column(...)``…"""
    if not isinstance(expr, ast.Call):
        return False
    return last_name(expr.func) in FIELD_DECLARATIONS


def last_name(expr: ast.expr) -> str:
    """``c`` for ``a.b.c`` or ``c``; empty for anything else."""
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""
