"""CR002: state on a class, which every instance — so every user's run — shares.

Reported: a class attribute bound to a mutable container (``active_runs: dict = {}``), a class
attribute bound to another object that methods change through ``self.x``/``cls.x``, and run-time
code that assigns a class attribute (``Engine.count += 1``, ``cls._instance = …``,
``type(self).x = …``).

Not reported, because the value is not shared or not mutable: immutable values; dunder
attributes read by the language or a framework (``__slots__``, ``__table_args__``);
``field(default_factory=…)``; fields of pydantic models and msgspec structs (each instance gets
a copy of the default; a ``ClassVar`` is still reported); Enum members; ``Meta``/``Config``
classes of frameworks; an attribute that ``__init__`` always replaces with ``self.x = …``; a
class defined inside an agent or tool (made anew in every run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from corral.check.findings import IMMUTABLE, PER_RUN, Issue
from corral.check.model import ModuleModel
from corral.check.runs import inside_a_run
from corral.check.scopes import Function, parameters, scope_nodes
from corral.check.values import (
    MUTATING_METHODS,
    is_dunder,
    is_field_declaration,
    mutable_kind,
    shared_kind,
    snippet,
)

_ENUM_BASES = frozenset({"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum"})
# Classes whose annotated attributes are fields with a default copied into each instance.
_MODEL_BASES = frozenset({"BaseModel", "RootModel", "BaseSettings", "SQLModel", "Struct"})
_CONFIG_CLASSES = frozenset({"Meta", "Config"})
_INIT_METHODS = frozenset({"__init__", "__post_init__"})
# Methods that run when a class is made (import time), not during a run.
_CLASS_CREATION = frozenset({"__init_subclass__", "__set_name__", "__class_getitem__"})


def class_state_issues(model: ModuleModel) -> list[Issue]:
    enums = _descendants(model.classes, _ENUM_BASES)
    models = _descendants(model.classes, _MODEL_BASES)
    methods: dict[ast.ClassDef, list[Function]] = {}
    for function in model.functions:
        if function.cls is not None:
            methods.setdefault(function.cls, []).append(function)
    issues: list[Issue] = []
    for cls in model.classes:
        if cls.name in enums or cls.name in _CONFIG_CLASSES:
            continue
        if inside_a_run(model.class_scopes[cls]):
            continue  # a class made anew in every run: its attributes are that run's
        issues.extend(_attribute_issues(model, cls, cls.name in models, methods.get(cls, [])))
    issues.extend(_class_writes(model))
    return issues


def _attribute_issues(
    model: ModuleModel, cls: ast.ClassDef, is_model: bool, methods: list[Function]
) -> Iterator[Issue]:
    initialised, assigned, changed = _instance_use(cls, methods)
    for statement in scope_nodes(cls.body):
        if isinstance(statement, ast.Assign):
            targets, value, annotation = statement.targets, statement.value, None
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value, annotation = [statement.target], statement.value, statement.annotation
        else:
            continue
        class_var = annotation is not None and "ClassVar" in snippet(annotation, 200)
        if is_model and annotation is not None and not class_var:
            continue  # a field: pydantic and msgspec copy its default into every instance
        if is_field_declaration(value):
            continue
        for target in targets:
            if not isinstance(target, ast.Name) or is_dunder(target.id):
                continue
            name = target.id
            if name == "model_config" or name in initialised:
                continue
            kind = mutable_kind(value, model.imports)
            if (
                kind is None
                and shared_kind(value, model.imports) == "object"
                and name in changed
                and name not in assigned
            ):
                kind = "object"
            if kind is None:
                continue
            # A model class whose base lives in another module cannot be recognised here:
            # tell the reader how to say that it is one.
            hint = (
                f"; if `{cls.name}` is a pydantic model, write `Field(default_factory=…)`"
                if annotation is not None and not class_var and cls.bases
                else ""
            )
            yield Issue(
                target,
                "CR002",
                f"class-level {kind} `{cls.name}.{name}` is one object shared by every "
                f"instance, so one user's run can leave data in it for another's; create "
                f"it per instance in `__init__` (or `field(default_factory=…)`), {PER_RUN}, "
                f"or {IMMUTABLE} if it is a constant{hint}",
            )


def _instance_use(
    cls: ast.ClassDef, methods: list[Function]
) -> tuple[set[str], set[str], set[str]]:
    """Attribute names that ``__init__`` assigns on ``self``, that any method assigns on
    ``self``, and that methods change in place through ``self.x`` or ``cls.x``."""
    initialised: set[str] = set()
    assigned: set[str] = set()
    changed: set[str] = set()
    for method in methods:
        params = parameters(method.node.args)
        if isinstance(method.node, ast.Lambda) or not params:
            continue
        instance = params[0].arg
        roots = {instance, cls.name}
        for node in scope_nodes(method.node.body):
            if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(
                node.ctx, ast.Store | ast.Del
            ):
                if isinstance(node, ast.Attribute) and _is_attribute_of(node, {instance}):
                    assigned.add(node.attr)
                    if method.name in _INIT_METHODS:
                        initialised.add(node.attr)
                    continue
                name = _first_attribute(node, roots)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr not in MUTATING_METHODS:
                    continue
                name = _first_attribute(node.func.value, roots)
            else:
                continue
            if name is not None:
                changed.add(name)
    return initialised, assigned, changed


def _class_writes(model: ModuleModel) -> Iterator[Issue]:
    """Run-time assignments to an attribute of a class object."""
    classes = model.module_classes()
    for function in model.functions:
        node = function.node
        if isinstance(node, ast.Lambda) or node.name in _CLASS_CREATION:
            continue
        params = parameters(node.args)
        first = params[0].arg if params and function.cls is not None else None
        is_classmethod = any(
            isinstance(d, ast.Name) and d.id == "classmethod" for d in node.decorator_list
        )
        for target in scope_nodes(node.body):
            if not (isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Store)):
                continue
            base = target.value
            if isinstance(base, ast.Name):
                on_class = (base.id in classes and function.owner_of(base.id) is None) or (
                    base.id == first and (is_classmethod or node.name == "__new__")
                )
            else:
                on_class = first is not None and _is_class_of(base, first)
            if on_class:
                yield Issue(
                    target,
                    "CR002",
                    f"`{snippet(target)} = …` assigns a class attribute at run time, one "
                    f"value for every instance and every user's run; keep it on the instance "
                    f"(`self.{target.attr}`), or create the object once in the app's lifespan "
                    "and pass it explicitly",
                )


def _is_class_of(expr: ast.expr, instance: str) -> bool:
    """``type(self)`` or ``self.__class__``."""
    if isinstance(expr, ast.Attribute) and expr.attr == "__class__":
        return isinstance(expr.value, ast.Name) and expr.value.id == instance
    return (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Name)
        and expr.func.id == "type"
        and len(expr.args) == 1
        and isinstance(expr.args[0], ast.Name)
        and expr.args[0].id == instance
    )


def _is_attribute_of(node: ast.expr, roots: set[str]) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in roots
    )


def _first_attribute(expr: ast.expr, roots: set[str]) -> str | None:
    """``x`` in ``self.x``, ``self.x.y[k]`` or ``cls.x[k]``; None when not rooted there."""
    while isinstance(expr, ast.Attribute | ast.Subscript):
        if isinstance(expr, ast.Attribute) and _is_attribute_of(expr, roots):
            return expr.attr
        expr = expr.value
    return None


def _descendants(classes: tuple[ast.ClassDef, ...], roots: frozenset[str]) -> set[str]:
    """Names of the classes here that derive, directly or through classes of this module,
    from a base whose name is in ``roots``."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for cls in classes:
            if cls.name not in found and _base_names(cls) & (roots | found):
                found.add(cls.name)
                changed = True
    return found


def _base_names(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for base in cls.bases:
        while isinstance(base, ast.Subscript):  # RootModel[list[int]], Generic[T]
            base = base.value
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names
