"""Agents and tools by name; frozen once an app starts, so nothing registers behind its back."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from corral.errors import RegistryError, UnknownAgentError, UnknownToolError

if TYPE_CHECKING:
    from corral.core.engine import RunContext

AgentFunc = Callable[["RunContext", Any], Awaitable[Any]]
ToolFunc = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Lifespan = Callable[[], AbstractAsyncContextManager[Any]]

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent. ``roles``: when not empty, the agent exists only for users holding at least
    one of them (contract §2); everyone else is told there is no such agent."""

    name: str
    description: str
    input_model: type[BaseModel]
    func: AgentFunc
    timeout_s: float | None = None
    roles: frozenset[str] = frozenset()

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def visible_to(self, roles: Iterable[str]) -> bool:
        """Whether a user holding ``roles`` may see and start this agent."""
        return not self.roles or not self.roles.isdisjoint(roles)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool. ``context_param`` names the parameter annotated ``corral.RunContext``, if
    any: the tool engine passes the run's context there, and it is not an argument."""

    name: str
    description: str
    params_model: type[BaseModel]
    func: ToolFunc
    timeout_s: float | None = None
    context_param: str | None = None

    def parameters_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


def _is_run_context(annotation: object) -> bool:
    from corral.core.engine import RunContext  # the engine imports this module

    if annotation is RunContext:
        return True
    # ``RunContext | None`` (a tool that may also be called without one) counts too.
    return RunContext in getattr(annotation, "__args__", ())


def context_param_of(name: str, func: Callable[..., Any]) -> str | None:
    """The parameter of ``func`` annotated ``corral.RunContext``, or None (at most one)."""
    hints = inspect.get_annotations(func, eval_str=True)
    found = [p for p, hint in hints.items() if p != "return" and _is_run_context(hint)]
    if len(found) > 1:
        raise RegistryError(
            f"tool {name!r} declares {len(found)} RunContext parameters "
            f"({', '.join(found)}); declare one"
        )
    return found[0] if found else None


def params_model_for(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of ``func``'s keyword parameters; extra arguments are refused.

    A parameter annotated ``corral.RunContext`` is left out: the tool engine injects it, so it
    is neither in the schema a model sees nor an argument a caller may pass.
    """
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(func, eval_str=True)
    skip = context_param_of(name, func)
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise RegistryError(f"tool {name!r}: *args/**kwargs cannot be described as a schema")
        if param.name == skip:
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model_name = "".join(part.capitalize() for part in re.split(r"[_\-]", name)) + "Args"
    return create_model(model_name, __config__=ConfigDict(extra="forbid", strict=False), **fields)


def _roles(name: str, roles: Iterable[str]) -> frozenset[str]:
    if isinstance(roles, str):
        raise RegistryError(f"agent {name!r}: roles is a set of role names, e.g. {{{roles!r}}}")
    result = frozenset(roles)
    if not all(isinstance(r, str) and r for r in result):
        raise RegistryError(f"agent {name!r}: every role must be a non-empty string")
    return result


class AgentRegistry:
    """Agents and tools by name.

    Register with :meth:`agent` / :meth:`tool` (decorators) or :meth:`add_agent` /
    :meth:`add_tool`. :meth:`freeze` is called when an app starts; registering afterwards raises
    :class:`RegistryError`. Lookups are read-only and safe from any task.
    """

    def __init__(self) -> None:
        self._agents: dict[str, AgentSpec] = {}
        self._tools: dict[str, ToolSpec] = {}
        self._lifespans: list[Lifespan] = []
        self._frozen = False

    # -- registration ---------------------------------------------------------------------

    def _check_open(self, kind: str, name: str) -> None:
        if self._frozen:
            raise RegistryError(
                f"cannot register {kind} {name!r}: the registry is frozen because an app "
                "started with it; register everything before create_app()"
            )
        if not _NAME.match(name):
            raise RegistryError(
                f"{kind} name {name!r} must be lowercase letters, digits, '_' or '-' "
                "(at most 64 characters, starting with a letter)"
            )

    def add_agent(
        self,
        func: AgentFunc,
        *,
        name: str,
        input_model: type[BaseModel],
        description: str = "",
        timeout_s: float | None = None,
        roles: Iterable[str] = (),
    ) -> AgentSpec:
        """Register ``func`` as agent ``name``; with ``roles``, only users holding at least
        one of them see it (to anyone else it is absent: a 404 like an unknown agent)."""
        self._check_open("agent", name)
        if name in self._agents:
            raise RegistryError(f"an agent named {name!r} is already registered")
        if not inspect.iscoroutinefunction(func):
            raise RegistryError(f"agent {name!r} must be an async function (ctx, input)")
        if not (isinstance(input_model, type) and issubclass(input_model, BaseModel)):
            raise RegistryError(f"agent {name!r}: input_model must be a pydantic BaseModel")
        spec = AgentSpec(
            name=name,
            description=description or (inspect.getdoc(func) or "").split("\n\n")[0],
            input_model=input_model,
            func=func,
            timeout_s=timeout_s,
            roles=_roles(name, roles),
        )
        self._agents[name] = spec
        return spec

    def add_tool(
        self,
        func: ToolFunc,
        *,
        name: str | None = None,
        description: str = "",
        timeout_s: float | None = None,
    ) -> ToolSpec:
        tool_name = name or func.__name__
        self._check_open("tool", tool_name)
        if tool_name in self._tools:
            raise RegistryError(f"a tool named {tool_name!r} is already registered")
        if not inspect.iscoroutinefunction(func):
            raise RegistryError(f"tool {tool_name!r} must be an async function")
        spec = ToolSpec(
            name=tool_name,
            description=description or (inspect.getdoc(func) or "").split("\n\n")[0],
            params_model=params_model_for(tool_name, func),
            func=func,
            timeout_s=timeout_s,
            context_param=context_param_of(tool_name, func),
        )
        self._tools[tool_name] = spec
        return spec

    def agent(
        self,
        name: str,
        *,
        input_model: type[BaseModel],
        description: str = "",
        timeout_s: float | None = None,
        roles: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Decorator for ``async def f(ctx, input)``: ``@registry.agent("name", input_model=M)``;
        ``roles={"analyst"}`` gates it (see :meth:`add_agent`)."""

        def decorate(func: F) -> F:
            self.add_agent(
                func,
                name=name,
                input_model=input_model,
                description=description,
                timeout_s=timeout_s,
                roles=roles,
            )
            return func

        return decorate

    def tool(
        self, name: str | None = None, *, description: str = "", timeout_s: float | None = None
    ) -> Callable[[F], F]:
        """Decorator: ``@registry.tool()`` on ``async def f(a: int, b: str = "x")``."""

        def decorate(func: F) -> F:
            self.add_tool(func, name=name, description=description, timeout_s=timeout_s)
            return func

        return decorate

    def add_lifespan(self, lifespan: Lifespan) -> None:
        """Run ``lifespan()`` (an async context manager) for as long as an app serves this
        registry: for app-scoped resources of agents, such as one HTTP connection pool."""
        self._check_open("lifespan", "lifespan")
        self._lifespans.append(lifespan)

    def lifespans(self) -> tuple[Lifespan, ...]:
        return tuple(self._lifespans)

    def include(self, other: AgentRegistry) -> None:
        """Copy every agent and tool of ``other`` into this registry."""
        for tool in other.tools():
            self.add_tool(
                tool.func, name=tool.name, description=tool.description, timeout_s=tool.timeout_s
            )
        for lifespan in other.lifespans():
            self.add_lifespan(lifespan)
        for spec in other.agents():
            self.add_agent(
                spec.func,
                name=spec.name,
                input_model=spec.input_model,
                description=spec.description,
                timeout_s=spec.timeout_s,
                roles=spec.roles,
            )

    def freeze(self) -> None:
        """Refuse further registration (idempotent). Lookups keep working."""
        if not self._frozen:
            self._agents = MappingProxyType(dict(self._agents))  # type: ignore[assignment]
            self._tools = MappingProxyType(dict(self._tools))  # type: ignore[assignment]
            self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    # -- lookup -----------------------------------------------------------------------------

    def get_agent(self, name: str) -> AgentSpec:
        try:
            return self._agents[name]
        except (KeyError, TypeError):
            raise UnknownAgentError(str(name)) from None

    def get_tool(self, name: str) -> ToolSpec:
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            raise UnknownToolError(str(name)) from None

    def agents(self) -> list[AgentSpec]:
        return sorted(self._agents.values(), key=lambda a: a.name)

    def agents_for(self, roles: Iterable[str]) -> list[AgentSpec]:
        """The agents a user holding ``roles`` may see, by name."""
        held = frozenset(roles)
        return [a for a in self.agents() if a.visible_to(held)]

    def tools(self) -> list[ToolSpec]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self.agents())

    def __contains__(self, name: object) -> bool:
        return name in self._agents
