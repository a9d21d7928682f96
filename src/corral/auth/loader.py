"""``MODULE[:ATTR]`` settings that name an async function (``--auth``, ``--secrets``)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any, cast

from corral.errors import ConfigurationError


def load_async_function(
    spec: str, *, setting: str, default_attr: str, arity: int, signature: str
) -> Callable[..., Any]:
    """The async function ``spec`` names, importable from the current folder like ``--agents``.

    ``ATTR`` defaults to ``default_attr``. Raises :class:`ConfigurationError` naming
    ``setting`` and showing ``signature`` when the module cannot be imported, has no such
    attribute, or the attribute is not an async function taking ``arity`` arguments.
    Importing runs the module's top-level code once (Python caches modules).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"{setting} is empty; give MODULE:ATTR naming {signature}")
    module_name, _, attr = spec.strip().partition(":")
    attr = attr or default_attr
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigurationError(f"{setting} {spec!r}: expected MODULE:ATTR naming {signature}")
    if not attr.isidentifier():
        raise ConfigurationError(f"{setting} {spec!r}: {attr!r} is not a Python name")
    # Like uvicorn's --app-dir ".": a module in the current folder is importable even when
    # corral runs from its console script (whose folder, not the cwd, heads sys.path).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{setting} {spec}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"{setting} {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    target = getattr(module, attr, None)
    if target is None:
        raise ConfigurationError(f"{setting} {spec}: {module_name} has no {attr!r} ({signature})")
    call = getattr(target, "__call__", None)  # noqa: B004 - an async __call__ counts too
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call)):
        raise ConfigurationError(
            f"{setting} {spec}: {attr!r} must be an async function: {signature}"
        )
    try:
        inspect.signature(target).bind(*([None] * arity))
    except TypeError:
        raise ConfigurationError(
            f"{setting} {spec}: {attr!r} must take {arity} argument(s): {signature}"
        ) from None
    except ValueError:  # no signature to inspect (some builtins): let the call tell
        pass
    return cast(Callable[..., Any], target)
