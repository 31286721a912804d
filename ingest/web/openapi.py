"""The OpenAPI document, generated from the marshmallow schemas (apispec)."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

from ingest.config import Config

ERROR_CODES = {
    400: "malformed_body",
    401: "invalid_signature",
    403: "origin_not_allowed",
    404: "unknown_source",
    408: "body_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class CanonicalSubmission(Schema):
    """Canonical JSON (format `json`); every other key, at any depth, is dropped."""

    name = fields.String(metadata={"example": "Maija Meikäläinen"})
    first_name = fields.String()
    last_name = fields.String()
    email = fields.String(metadata={"format": "email", "example": "maija@example.fi"})
    phone = fields.String(metadata={"example": "040 123 4567"})
    message = fields.String(metadata={"example": "Please call me."})
    consents = fields.Dict(
        keys=fields.String(), values=fields.Boolean(), metadata={"example": {"marketing-email-v1": True}}
    )


class FormPost(Schema):
    """A browser form post (format `html`); field names per the source's `fields` mapping."""

    name = fields.String()
    email = fields.String()
    phone = fields.String()
    message = fields.String()


class Accepted(Schema):
    """A committed submission (or the first one, for a repeated delivery)."""

    status = fields.String(required=True, validate=validate.OneOf(["created", "duplicate", "updated"]))
    submission_id = fields.UUID(required=True)


class Ignored(Schema):
    """Understood, nothing stored (a chat without contact details, an event we do not store)."""

    status = fields.String(required=True, validate=validate.OneOf(["ignored"]))
    reason = fields.String(required=True)


class Error(Schema):
    """Every error: a machine-readable code, never a submitted value."""

    error = fields.String(required=True)


class ValidationError(Schema):
    """422: which fields failed and why."""

    error = fields.String(required=True, validate=validate.OneOf(["validation_failed"]))
    fields_ = fields.Dict(
        data_key="fields", keys=fields.String(), values=fields.List(fields.String()), required=True
    )


class OptOut(Schema):
    """A direct-marketing objection."""

    email = fields.String()
    phone = fields.String()


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        schema = "ValidationError" if status == 422 else "Error"  # noqa: PLR2004
        description = "fields invalid" if status == 422 else ERROR_CODES[status]  # noqa: PLR2004
        out[str(status)] = {"description": description, "content": {"application/json": {"schema": schema}}}
    return out


def build_spec(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this deployment (source names from the config)."""
    spec = APISpec(
        title="QualityDesk Ingest", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()]
    )
    for schema in (CanonicalSubmission, FormPost, Accepted, Ignored, Error, ValidationError, OptOut):
        spec.components.schema(schema.__name__, schema=schema)
    for kind, channel in (("forms", "form"), ("chats", "chat")):
        names = sorted(n for n, s in config.sources.items() if s.channel == channel) or ["none"]
        spec.path(
            path=f"/v1/{kind}/{{source}}",
            operations={
                "post": {
                    "summary": f"Receive a {channel} submission from a configured source",
                    "parameters": [
                        {
                            "name": "source",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": names},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": "CanonicalSubmission"},
                            "application/x-www-form-urlencoded": {"schema": "FormPost"},
                            "multipart/form-data": {"schema": "FormPost"},
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "created",
                            "content": {"application/json": {"schema": "Accepted"}},
                        },
                        "200": {
                            "description": "duplicate delivery",
                            "content": {"application/json": {"schema": "Accepted"}},
                        },
                        "202": {
                            "description": "ignored",
                            "content": {"application/json": {"schema": "Ignored"}},
                        },
                        "303": {"description": "browser redirect to success_url / error_url"},
                        **_errors(400, 401, 403, 404, 408, 413, 415, 422, 429, 503),
                    },
                }
            },
        )
    admin: dict[str, Any] = {"security": [{"bearer": []}]}
    identifier = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
        for n in ("email", "phone")
    ]
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.path(
        path="/v1/subjects",
        operations={
            "get": {
                **admin,
                "summary": "Export everything held on a person (scope export)",
                "parameters": identifier,
                "responses": {
                    "200": {"description": "the export document"},
                    **_errors(401, 422, 503),
                    "403": {"description": "token lacks the scope"},
                },
            },
            "delete": {
                **admin,
                "summary": "Erase a person (scope erase)",
                "parameters": identifier,
                "responses": {
                    "200": {"description": "what was removed"},
                    **_errors(401, 422, 503),
                    "403": {"description": "token lacks the scope"},
                },
            },
        },
    )
    spec.path(
        path="/v1/subjects/opt-out",
        operations={
            "post": {
                **admin,
                "summary": "Record a direct-marketing objection (scope opt-out)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": "OptOut"}}},
                "responses": {
                    "200": {"description": "recorded"},
                    **_errors(400, 401, 422, 503),
                    "403": {"description": "token lacks the scope"},
                },
            }
        },
    )
    forms = sorted(n for n, s in config.sources.items() if s.format == "html") or ["none"]
    html_page = {"content": {"text/html": {"schema": {"type": "string"}}}}
    spec.path(
        path="/v1/forms/{source}",
        operations={
            "get": {
                "summary": "The example contact form of an html source (copy or embed it)",
                "parameters": [
                    {
                        "name": "source",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": forms},
                    }
                ],
                "responses": {"200": {"description": "the form page", **html_page}, **_errors(404)},
            },
            "options": {
                "summary": "CORS preflight for an html source posting with fetch()",
                "parameters": [
                    {
                        "name": "source",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": forms},
                    }
                ],
                "responses": {"200": {"description": "allowed origin"}, **_errors(403, 404)},
            },
        },
    )
    spec.path(
        path="/v1/chats/{source}",
        operations={
            "options": {
                "summary": "CORS preflight (chat sources are server-to-server: always refused)",
                "parameters": [
                    {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "allowed origin"}, **_errors(403, 404)},
            }
        },
    )
    token = [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}]
    for path, what in (("/v1/unsubscribe", "unsubscribe"), ("/v1/confirm", "marketing opt-in confirmation")):
        spec.path(
            path=path,
            operations={
                "get": {
                    "summary": f"Signed {what} link: a page asking to confirm (mail scanners only GET)",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "the page with its button", **html_page},
                        "400": {"description": "link not valid or expired", **html_page},
                    },
                },
                "post": {
                    "summary": f"Carry out the {what} (RFC 8058 one-click for unsubscribe), no login",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "done", **html_page},
                        "400": {"description": "link not valid or expired", **html_page},
                        **_errors(503),
                    },
                },
            },
        )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
    )
    for path in ("/healthz", "/readyz", "/metrics"):
        spec.path(
            path=path,
            operations={
                "get": {
                    "summary": path[1:],
                    "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}},
                }
            },
        )
    return spec.to_dict()


def render_markdown(document: dict[str, Any]) -> str:
    """The OpenAPI document as Markdown, for docs/api.md (generated, never edited by hand)."""
    lines = [
        f"# {document['info']['title']} HTTP API",
        "",
        "Generated from the service's own OpenAPI document (`GET /openapi.json`) for the",
        "example configuration: `ingest --config deploy/ingest.example.toml openapi --markdown`.",
        "A test fails when this file and the code disagree.",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation_markdown(method, path, operation)
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _schema_markdown(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def _operation_markdown(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"## {method.upper()} `{path}`", "", operation["summary"] + ".", ""]
    if operation.get("security"):
        lines += ["Needs `Authorization: Bearer <admin token>`.", ""]
    if params := operation.get("parameters", []):
        lines += ["| parameter | in | required | values |", "|---|---|---|---|"]
        for param in params:
            values = ", ".join(f"`{v}`" for v in param["schema"].get("enum", [])) or "string"
            required = "yes" if param.get("required") else "no"
            lines.append(f"| `{param['name']}` | {param['in']} | {required} | {values} |")
        lines.append("")
    if body := operation.get("requestBody"):
        lines += ["Request body:", ""]
        lines += [f"- `{kind}`: {_schema_name(media)}" for kind, media in body["content"].items()]
        lines.append("")
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        bodies = ", ".join(f"{_schema_name(m)} (`{k}`)" for k, m in content.items()) or "-"
        lines.append(f"| {status} | {response['description']} | {bodies} |")
    lines.append("")
    return lines


def _schema_markdown(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required |", "|---|---|---|"]
    for field, spec in schema.get("properties", {}).items():
        kind = spec.get("type", "any")
        if isinstance(kind, list):
            kind = " or ".join(kind)
        if "enum" in spec:
            kind += ": " + ", ".join(f"`{v}`" for v in spec["enum"])
        lines.append(f"| `{field}` | {kind} | {'yes' if field in required else 'no'} |")
    lines.append("")
    return lines


def _schema_name(media: dict[str, Any]) -> str:
    ref = media.get("schema", {}).get("$ref", "")
    return f"[{ref.rsplit('/', 1)[-1]}](#{ref.rsplit('/', 1)[-1].lower()})" if ref else "text"
