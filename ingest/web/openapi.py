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
