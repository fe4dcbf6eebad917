"""The OpenAPI 3.1 document, generated from the endpoint declarations."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel

from campus.api.routing import Api, Auth, encode_json

PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
    "required": ["title", "status", "detail"],
}


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@cache
def openapi_bytes(api: Api) -> bytes:
    return encode_json(openapi_document(api, campus_version()))


def campus_version() -> str:
    try:
        return version("campus")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def openapi_document(api: Api, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, Any] = {}
    problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for ep in api.endpoints:
        op: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "tags": [ep.tag] if ep.tag else [],
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in ep.path_params
            ],
            "responses": {},
        }
        if ep.query is not None:
            properties = ep.query.model_json_schema()["properties"]
            for name, field in ep.query.model_fields.items():
                key = field.alias or name
                op["parameters"].append({
                    "name": key, "in": "query", "required": field.is_required(), "schema": properties[key],
                    **({"description": field.description} if field.description else {}),
                })
        if ep.raw is not None:
            op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(ep.body, components, "validation")}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if ep.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(ep.response, components, "serialization")}}
        if ep.produces is not None:
            ok["content"] = {ep.produces: {"schema": {"type": "string"}}}
        op["responses"][str(ep.status)] = ok
        errors = {"400": "malformed request", "422": "invalid values"} if ep.body or ep.query else {}
        if ep.auth is not Auth.NONE:
            op["security"] = [{"bearer": []}]
            errors["401"] = "missing or invalid credentials"
        if ep.auth is Auth.CONSOLE:
            errors["403"] = "licence agreement not accepted"
        if ep.path_params:
            errors["404"] = "unknown, or another tenant's"
        if ep.method in ("PUT", "PATCH", "POST", "DELETE"):
            errors["409"] = "conflict: uniqueness, state or concurrent change"
        if ep.method in ("PUT", "PATCH"):
            errors["412"] = "stale If-Match"
        if ep.body or ep.raw:
            errors["413"] = "body over the size cap"
        for status, description in errors.items():
            op["responses"][status] = {"description": description, "content": problem_ref}
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "campus hosting console", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
