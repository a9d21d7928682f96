"""The route table: each operation declared once — its handler, parameters, body and answers.

The Starlette routes and the OpenAPI document are both made from this table (one route per
path, so a wrong method is a 405 whose ``Allow`` lists every method of the path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.errors import InvalidRequest
from corral.server.params import Body, Param

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented response: its description and body (a model, or a content type)."""

    description: str
    model: type[BaseModel] | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    params: tuple[Param, ...] = ()
    body: Body | None = None
    auth: bool = True
    description: str = ""


def group_by_path(operations: Sequence[Operation]) -> dict[str, dict[str, Operation]]:
    paths: dict[str, dict[str, Operation]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = op
    return paths


def routes_for(operations: Sequence[Operation]) -> list[Route]:
    """One Starlette route per path, dispatching on the method (``HEAD`` as ``GET``)."""
    routes = []
    for path, by_method in group_by_path(operations).items():
        handlers = {method: op.handler for method, op in by_method.items()}
        if "GET" in handlers:
            handlers["HEAD"] = handlers["GET"]
        routes.append(Route(path, _dispatcher(handlers), methods=list(handlers)))
    return routes


def _dispatcher(handlers: Mapping[str, Handler]) -> Handler:
    table = MappingProxyType(dict(handlers))

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return dispatch


def check_path_params(request: Request, *names: str) -> tuple[str, ...]:
    """The path parameters ``names`` (Starlette guarantees they are present)."""
    values = []
    for name in names:
        value = request.path_params.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"path parameter {name} is missing")
        values.append(value)
    return tuple(values)
