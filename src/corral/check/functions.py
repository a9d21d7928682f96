"""CR004 (a cache on a function whose arguments carry user data) and CR005 (a mutable default
argument): state that a function definition keeps between calls.

CR004 decision. ``functools.cache``/``lru_cache`` and their cousins keep one table per
function for the whole process. A cache of pure computation over things that are not user
data (a unit table, a parsed config, a compiled pattern) is what caches are for, and
reporting every cache would drown the real findings; so a cache is reported when a parameter
carries user data: its name holds one of the words in :data:`USER_WORDS` (``user_id``,
``session``, ``token``, ``messages``, ``query``…) or ends in ``run_id``/``thread_id``/``api_key``,
or its annotation names a per-run type (``RunContext``, ``Identity``, ``Request``…). Such a
cache keeps one user's data in memory for every other user's run — past the thread's deletion,
past a token's expiry — and answers for one user from another's call. ``cached_property`` is
not reported: it caches on the instance, so it is exactly as shared as the instance is, and
the rules for module- and class-level objects judge that.

A function defined inside an agent or tool is made anew in every run, so its cache and its
default values belong to that run and are not reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from corral.check.findings import PER_RUN, Issue
from corral.check.model import ModuleModel
from corral.check.runs import inside_a_run
from corral.check.scopes import Function, parameters
from corral.check.values import dotted, mutable_kind

CACHE_DECORATORS = frozenset(
    {
        "functools.cache",
        "functools.lru_cache",
        "cachetools.cached",
        "cachetools.func.fifo_cache",
        "cachetools.func.lfu_cache",
        "cachetools.func.lru_cache",
        "cachetools.func.mru_cache",
        "cachetools.func.rr_cache",
        "cachetools.func.ttl_cache",
        "async_lru.alru_cache",
        "aiocache.cached",
        "aiocache.multi_cached",
        "asyncstdlib.cache",
        "asyncstdlib.lru_cache",
    }
)
# A parameter whose name, split at underscores, holds one of these words carries user data.
USER_WORDS = frozenset(
    {
        "user",
        "users",
        "username",
        "userid",
        "uid",
        "owner",
        "tenant",
        "account",
        "customer",
        "identity",
        "principal",
        "session",
        "token",
        "secret",
        "password",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "email",
        "ctx",
        "context",
        "request",
        "message",
        "messages",
        "input",
        "prompt",
        "question",
        "query",
        "history",
        "conversation",
        "chat",
    }
)
USER_SUFFIXES = ("run_id", "thread_id", "api_key", "apikey")
# Annotations naming an object that belongs to one run or one user.
USER_TYPES = frozenset(
    {"RunContext", "UserExecutionContext", "Identity", "AuthRequest", "Request", "WebSocket"}
)


def function_issues(model: ModuleModel) -> list[Issue]:
    issues: list[Issue] = []
    for function in model.functions:
        if inside_a_run(function.parent):
            continue  # defined anew in every run: its cache and defaults are that run's
        issues.extend(_cache_issues(model, function))
        issues.extend(_default_issues(model, function))
    return issues


def carries_user_data(param: ast.arg) -> bool:
    """``param`` is named or annotated like data of one user or one run."""
    name = param.arg.lower().strip("_")
    if set(name.split("_")) & USER_WORDS or name in ("run", "thread"):
        return True
    if name.endswith(USER_SUFFIXES):
        return True
    if param.annotation is None:
        return False
    return any(
        (isinstance(n, ast.Name) and n.id in USER_TYPES)
        or (isinstance(n, ast.Attribute) and n.attr in USER_TYPES)
        or (isinstance(n, ast.Constant) and str(n.value).rsplit(".", 1)[-1] in USER_TYPES)
        for n in ast.walk(param.annotation)
    )


def _cache_issues(model: ModuleModel, function: Function) -> Iterator[Issue]:
    node = function.node
    if isinstance(node, ast.Lambda):
        return
    params = parameters(node.args)
    if function.cls is not None and not _is_staticmethod(node):
        params = params[1:]  # self or cls
    user_params = [p.arg for p in params if carries_user_data(p)]
    if not user_params:
        return
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = dotted(target, model.imports)
        if name is not None and name in CACHE_DECORATORS:
            shown = ", ".join(f"`{p}`" for p in user_params)
            yield Issue(
                decorator,
                "CR004",
                f"`@{name.rsplit('.', 1)[-1]}` on `{node.name}` keeps a result for every "
                f"{shown} in one process-wide cache that every user's run reads; key the "
                f"cache by something that is not user data, or drop it ({PER_RUN})",
            )


def _is_staticmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


def _default_issues(model: ModuleModel, function: Function) -> Iterator[Issue]:
    args = function.node.args
    positional = [*args.posonlyargs, *args.args]
    with_default = positional[len(positional) - len(args.defaults) :]
    pairs = list(zip(with_default, args.defaults, strict=True))
    for param, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw_default is not None:
            pairs.append((param, kw_default))
    for param, default in pairs:
        kind = mutable_kind(default, model.imports)
        if kind is not None:
            yield Issue(
                default,
                "CR005",
                f"mutable default `{param.arg}={ast.unparse(default)[:40]}` of "
                f"`{function.name}` is made once and shared by every call, so one user's run "
                f"can leave data in it for another's; default to None and make a new {kind} "
                "inside the function, or use an immutable default (a tuple or frozenset)",
            )
