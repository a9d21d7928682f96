"""``/openapi.json``, made from the route table (:mod:`corral.server.api`) and its models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from corral.server.api import Operation, group_by_path
from corral.server.responses import error_answers

REF_TEMPLATE = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]


def build_openapi(
    operations: Sequence[Operation], *, title: str, version: str, description: str
) -> dict[str, Any]:
    """An OpenAPI 3.1 document of ``operations``: parameters, bodies, every answer."""
    # Every route refuses a Host that is not the server's (server/hosts.py), before routing.
    operations = [replace(op, answers={**error_answers(403), **op.answers}) for op in operations]
    uses: list[tuple[type[BaseModel], Mode]] = []
    for op in operations:
        if op.body is not None:
            uses.append((op.body.model, "validation"))
        uses.extend((a.model, "serialization") for a in op.answers.values() if a.model)
    refs, top = models_json_schema(list(dict.fromkeys(uses)), ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, Any] = {}
    for path, by_method in group_by_path(operations).items():
        item: dict[str, Any] = {}
        for method, op in by_method.items():
            doc: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": [op.tag],
                "responses": {},
            }
            if op.description:
                doc["description"] = op.description
            if op.params:
                doc["parameters"] = [p.openapi() for p in op.params]
            if op.auth:
                doc["security"] = [{"bearer": []}]
            if op.body is not None:
                doc["requestBody"] = {
                    "required": op.body.required,
                    "description": op.body.description,
                    "content": {"application/json": {"schema": ref(op.body.model, "validation")}},
                }
            for status, answer in sorted(op.answers.items()):
                response: dict[str, Any] = {"description": answer.description}
                if answer.model is not None:
                    response["content"] = {
                        answer.content_type: {"schema": ref(answer.model, "serialization")}
                    }
                elif answer.content_type != "application/json":
                    response["content"] = {answer.content_type: {"schema": {"type": "string"}}}
                if answer.headers:
                    response["headers"] = {
                        name: {"description": text, "schema": {"type": "string"}}
                        for name, text in answer.headers.items()
                    }
                doc["responses"][str(status)] = response
            item[method.lower()] = doc
        paths[path] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`corral token USER` prints one",
                }
            },
        },
    }
