"""The built-in agents: ``echo`` (contract §6) and ``research`` with its tools.

Nothing registers at import time. Call :func:`register` on a registry you own, or take a fresh
one from :func:`builtin_registry`; ``corral serve --agents MODULE[:ATTR]`` loads other modules
the same way.
"""

from __future__ import annotations

from corral.agents import echo, research
from corral.core.registry import AgentRegistry

__all__ = ["builtin_registry", "register"]


def register(registry: AgentRegistry) -> None:
    """Register every built-in agent and tool into ``registry`` (raises if names are taken)."""
    echo.register(registry)
    research.register(registry)


def builtin_registry() -> AgentRegistry:
    """A new registry holding only the built-in agents and tools; each call builds a new one."""
    registry = AgentRegistry()
    register(registry)
    return registry
