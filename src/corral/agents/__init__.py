"""The built-in agents: ``echo`` (contract §6), ``research`` with its tools, and ``chat``.

``chat`` is registered only when a model is configured (``CORRAL_LLM_BASE_URL`` and
``CORRAL_LLM_MODEL``; see :class:`corral.llm.LLMSettings`).

Nothing registers at import time. Call :func:`register` on a registry you own, or take a fresh
one from :func:`builtin_registry`; ``corral serve --agents MODULE[:ATTR]`` loads other modules
the same way.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from corral.agents import chat, echo, research
from corral.core.registry import AgentRegistry
from corral.errors import ConfigurationError
from corral.llm import LLMSettings

log = logging.getLogger("corral.agents")

__all__ = ["builtin_registry", "register"]


def register(registry: AgentRegistry) -> None:
    """Register every built-in agent and tool into ``registry`` (raises if names are taken)."""
    echo.register(registry)
    research.register(registry)
    settings = llm_settings()
    if settings.configured:
        chat.register(registry, settings)
    elif settings.base_url or settings.model:
        missing = "CORRAL_LLM_MODEL" if settings.base_url else "CORRAL_LLM_BASE_URL"
        log.warning("the chat agent is off: %s is not set", missing)


def llm_settings() -> LLMSettings:
    """``CORRAL_LLM_*`` from the environment; a bad value is a :class:`ConfigurationError`."""
    try:
        return LLMSettings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "CORRAL_LLM_" + ".".join(str(p) for p in err["loc"]).upper()
        raise ConfigurationError(f"{name}: {err['msg']}") from None


def builtin_registry() -> AgentRegistry:
    """A new registry holding only the built-in agents and tools; each call builds a new one."""
    registry = AgentRegistry()
    register(registry)
    return registry
