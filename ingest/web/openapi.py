"""The OpenAPI document of one configuration: its sources, what each accepts, how each signs.

The parts no source changes are in openapi_components.py; its Markdown form in
openapi_markdown.py (`render_markdown` is re-exported here).
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from ingest.adapters import ADAPTERS
from ingest.config import CANONICAL_FIELDS, Config, Source
from ingest.web.openapi_components import (
    ADMIN_ERROR_CODES,
    CONTRACT,
    EXTRA_SCHEMAS,
    SIGNATURES,
    URL_KEYS,
    Accepted,
    Done,
    Error,
    Ignored,
    Processed,
    ValidationError,
    canonical_schema,
    error_responses,
    json_content,
    ref,
    security_key,
)
from ingest.web.openapi_markdown import render_markdown

_KINDS = {"form": "forms", "chat": "chats"}


def _form_fields(source: Source) -> dict[str, Any]:
    # The real names of this form's fields (`fields` mapping) and its consent checkboxes.
    properties: dict[str, Any] = {source.field_map.get(f, f): {"type": "string"} for f in CANONICAL_FIELDS}
    properties |= {
        name: {"type": "string", "description": f"checkbox of consent `{consent}`: ticked is granted"}
        for name, consent in sorted(source.consent_fields.items())
    }
    email, phone = (source.field_map.get(f, f) for f in ("email", "phone"))
    properties[email]["format"] = "email"
    return {
        "description": f"The fields of the `{source.name}` form: an e-mail or a phone is required.",
        "type": "object",
        "properties": properties,
        "anyOf": [{"required": [email]}, {"required": [phone]}],
    }


def _body_schema(source: Source) -> str:
    if source.format == "html":
        return f"{source.name}.form"
    if source.format == "json":
        return "CanonicalFormSubmission" if source.channel == "form" else "CanonicalChatSubmission"
    return {"livechat": "LivechatPayload", "jotform": "JotformPost"}.get(source.format, "ProviderPayload")


def _security(source: Source) -> tuple[dict[str, dict[str, Any]], list[dict[str, list[str]]]]:
    """The security schemes a source's deliveries carry, and the operation's requirement."""
    schemes = dict(SIGNATURES[source.format])
    if source.format == "crisp" and source.options.get("hook", "website") != "plugin":
        schemes = {}
    if source.format in URL_KEYS and not schemes:
        parameter = source.options.get("key_parameter", "key")
        schemes = {f"{source.name}.key": security_key(parameter, "query", URL_KEYS[source.format])}
    return schemes, ([{name: [] for name in schemes}] if schemes else [])


def _success(source: Source) -> dict[str, Any]:
    adapter = ADAPTERS[source.format]
    accepted = ["Accepted", *(["Processed"] if source.format == "zendesk" else [])]
    if source.format == "html":
        page = {"text/html": {"schema": {"type": "string"}}}
        return {
            "201": {"description": "created", "content": json_content("Accepted") | page},
            "303": {
                "description": "a browser (Accept: text/html) is sent to success_url or error_url",
                "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
            },
        }
    ignored = source.channel == "chat" or source.format != "json"
    if adapter.success_status is not None:
        # The provider counts only this status as delivered: every outcome gets it.
        one = [*accepted, *(["Ignored"] if ignored else [])]
        return {
            str(adapter.success_status): {
                "description": "created, duplicate or ignored",
                "content": json_content({"anyOf": [ref(n) for n in one]}),
            }
        }
    out = {
        "201": {"description": "created", "content": json_content("Accepted")},
        "200": {
            "description": "duplicate delivery (the first submission's id)"
            + ("; several events: one result each" if len(accepted) > 1 else ""),
            "content": json_content(
                accepted[0] if len(accepted) == 1 else {"anyOf": [ref(n) for n in accepted]}
            ),
        },
    }
    if ignored:
        out["202"] = {"description": "understood, nothing stored", "content": json_content("Ignored")}
    return out


def _intake(spec: APISpec, source: Source) -> None:
    adapter = ADAPTERS[source.format]
    html = source.format == "html"
    schemes, security = _security(source)
    for name, scheme in schemes.items():
        if name not in spec.components.security_schemes:
            spec.components.security_scheme(name, scheme)
    if html:
        spec.components.schema(f"{source.name}.form", component=_form_fields(source))
    body = _body_schema(source)
    origin = {
        "name": "Origin",
        "in": "header",
        "required": True,
        "description": "the page's origin (a browser sends it; else the Referer's origin counts)",
        "schema": {"type": "string", "enum": sorted(source.allowed_origins)},
    }
    post: dict[str, Any] = {
        "summary": f"Receive a {source.channel} delivery of source `{source.name}` ({source.format})",
        "operationId": f"receive-{source.name}",
        "requestBody": {
            "required": True,
            "content": {kind: {"schema": ref(body)} for kind in sorted(adapter.content_types)},
        },
        "responses": {
            **_success(source),
            **error_responses(*((400, 403) if html else (400, 401)), 408, 413, 415, 422, 429, 503, html=html),
        },
    }
    if html:
        post["parameters"] = [origin]
    if security:
        post["security"] = security
    preflight: dict[str, Any] = {
        "summary": "CORS preflight for a page posting with fetch()"
        if html
        else "CORS preflight (a server-to-server source: always refused)",
        "operationId": f"preflight-{source.name}",
        "responses": error_responses(403),
    }
    if html:
        preflight["parameters"] = [origin]
        preflight["responses"] = {
            "204": {
                "description": "allowed origin",
                "headers": {
                    "Access-Control-Allow-Origin": {"required": True, "schema": {"type": "string"}},
                    "Access-Control-Allow-Methods": {"required": True, "schema": {"type": "string"}},
                },
            },
            **preflight["responses"],
        }
    operations = {"post": post, "options": preflight}
    if html:
        operations["get"] = {
            "summary": "The example contact form of this source (copy or embed it)",
            "operationId": f"form-{source.name}",
            "responses": {"200": {"description": "the form page", "content": _page()}},
        }
    spec.path(path=f"/v1/{_KINDS[source.channel]}/{source.name}", operations=operations)
    if html:
        stamp = {"type": "object", "required": ["stamp"], "properties": {"stamp": {"type": "string"}}}
        spec.path(
            path=f"/v1/forms/{source.name}/stamp",
            operations={
                "get": {
                    "summary": "A fresh signed fill-time stamp, for an embedded copy of the form",
                    "operationId": f"stamp-{source.name}",
                    "responses": {"200": {"description": "the stamp", "content": json_content(stamp)}},
                }
            },
        )


def _page() -> dict[str, Any]:
    return {"text/html": {"schema": {"type": "string"}}}


def _admin(spec: APISpec) -> None:
    admin: dict[str, Any] = {"security": [{"bearer": []}]}
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "an admin token with the scope"}
    )
    either = "At least one of `email` and `phone` is required (422 without)"
    identifier = [
        {
            "name": "email",
            "in": "query",
            "required": False,
            "description": either,
            "schema": {"type": "string"},
        },
        {
            "name": "phone",
            "in": "query",
            "required": False,
            "description": either,
            "schema": {"type": "string"},
        },
    ]
    unauthorized = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}

    def responses(done: str, *statuses: int) -> dict[str, Any]:
        out = {"200": {"description": done, "content": json_content("Done")}}
        out |= error_responses(401, 403, *statuses, 422, 429, 503, codes=ADMIN_ERROR_CODES)
        out["401"]["headers"] = unauthorized
        return out

    spec.path(
        path="/v1/subjects",
        operations={
            "get": {
                **admin,
                "summary": "Export everything held on a person (scope export). " + either,
                "parameters": identifier,
                "responses": {
                    **responses("the export document"),
                    "200": {
                        "description": "the export document",
                        "content": json_content({"type": "object"}),
                    },
                },
            },
            "delete": {
                **admin,
                "summary": "Erase a person (scope erase). " + either,
                "parameters": identifier,
                "responses": responses("`erased`: what was removed"),
            },
        },
    )
    spec.path(
        path="/v1/subjects/opt-out",
        operations={
            "post": {
                **admin,
                "summary": "Record a direct-marketing objection (scope opt-out)",
                "requestBody": {"required": True, "content": json_content("OptOut")},
                "responses": responses("`opted_out`: what was recorded", 400, 408, 413),
            }
        },
    )


def _links(spec: APISpec) -> None:
    token = [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}]
    for path, what in (("/v1/unsubscribe", "unsubscribe"), ("/v1/confirm", "marketing opt-in confirmation")):
        invalid = {"description": "link not valid or expired", "content": _page()}
        spec.path(
            path=path,
            operations={
                "get": {
                    "summary": f"Signed {what} link: a page asking to confirm (mail scanners only GET)",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "the page with its button", "content": _page()},
                        "400": invalid,
                        **error_responses(503),
                    },
                },
                "post": {
                    "summary": f"Carry out the {what} (RFC 8058 one-click for unsubscribe), no login",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "done", "content": _page()},
                        "400": invalid,
                        **error_responses(503),
                    },
                },
            },
        )


def _access(spec: APISpec) -> None:
    """The self-service pages (ingest/web/access_pages.py): HTML for people, no login."""
    token = [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}]
    page = {"description": "the page", "content": _page()}
    invalid = {"description": "link not valid, expired or used", "content": _page()}
    form = {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["email"]}}}
    same = "the same page whether or not the address is known (a known one is mailed a link)"
    spec.path(
        path="/v1/access",
        operations={
            "get": {"summary": "Ask for a link to see your data", "responses": {"200": page}},
            "post": {
                "summary": "Mail a single-use link to the address, if it is known",
                "requestBody": {"required": True, "content": form},
                "responses": {
                    "200": {"description": same, "content": _page()},
                    "422": {"description": "not an e-mail address", "content": _page()},
                    "429": {
                        "description": "too many requests for this address or client",
                        "content": _page(),
                    },
                    **error_responses(408, 413, 503),
                },
            },
        },
    )
    steps = {
        "/v1/access/view": "Use the mailed link: what is held, and the person's choices",
        "/v1/access/export": "The same data as a JSON download (Art. 20)",
        "/v1/access/object": "Object to direct marketing (kept after erasure)",
        "/v1/access/erase": "Ask for erasure (a request on the one-month clock, or at once)",
    }
    for path, summary in steps.items():
        operations: dict[str, Any] = {
            "post": {"summary": summary, "parameters": token, "responses": {"200": page, "400": invalid}}
        }
        if path == "/v1/access/view":
            get = {"summary": "The link's page: one button (mail scanners only GET)", "parameters": token}
            operations["get"] = get | {"responses": {"200": page, "400": invalid}}
        spec.path(path=path, operations=operations)


def build_spec(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this deployment: one path per configured source."""
    spec = APISpec(
        title="QualityDesk Ingest", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()]
    )
    for schema in (Accepted, Ignored, Processed, Error, ValidationError, Done):
        spec.components.schema(schema.__name__, schema=schema)
    spec.components.schema("CanonicalFormSubmission", component=canonical_schema(config, "form"))
    spec.components.schema("CanonicalChatSubmission", component=canonical_schema(config, "chat"))
    for name, component in EXTRA_SCHEMAS.items():
        spec.components.schema(name, component=component)
    # Per source, not /v1/{kind}/{source}: what a source accepts and how it signs are its own.
    for _, source in sorted(config.sources.items()):
        _intake(spec, source)
    _admin(spec)
    _links(spec)
    _access(spec)
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": json_content({"type": "object"})}
                },
            }
        },
    )
    for path, summary in (("/healthz", "the process serves"), ("/readyz", "the database answers, migrated")):
        spec.path(
            path=path,
            operations={
                "get": {
                    "summary": summary,
                    "responses": {
                        "200": {"description": "ok", "content": json_content(status)},
                        **error_responses(503),
                    },
                }
            },
        )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "text exposition", "content": {"text/plain": {"schema": {}}}}
                },
            }
        },
    )
    document = spec.to_dict()
    document["info"]["description"] = CONTRACT
    return document


__all__ = ["SIGNATURES", "build_spec", "render_markdown"]
