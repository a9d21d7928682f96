"""``--agents MODULE[:ATTR]``: build the app's registry from modules."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from corral.core.registry import AgentRegistry
from corral.errors import ConfigurationError

BUILTIN = "corral.agents"


def load_agents(specs: Iterable[str]) -> AgentRegistry:
    """A new registry holding the agents each ``MODULE[:ATTR]`` names (built-ins when empty).

    ATTR may name an :class:`AgentRegistry` (its agents and tools are copied) or a function
    ``register(registry)``. Without ATTR the module's ``register`` function is used, else its
    ``registry``.
    """
    registry = AgentRegistry()
    # Like uvicorn's --app-dir ".": a module in the current folder is importable even when
    # corral runs from its console script (whose folder, not the cwd, heads sys.path).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for spec in list(specs) or [BUILTIN]:
        _load_one(registry, spec)
    return registry


def _load_one(registry: AgentRegistry, spec: str) -> None:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"--agents {spec}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?"
        ) from exc
    names = [attr] if attr else ["register", "registry"]
    for name in names:
        target = getattr(module, name, None)
        if isinstance(target, AgentRegistry):
            registry.include(target)
            return
        if callable(target):
            target(registry)
            return
    raise ConfigurationError(
        f"--agents {spec}: {module_name} has no "
        + (f"{attr!r}" if attr else "'register(registry)' function or 'registry'")
        + " (an AgentRegistry or a register(registry) function)"
    )
