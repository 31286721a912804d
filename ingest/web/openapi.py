"""The OpenAPI document of one configuration: its sources, what each accepts, how each signs."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import EXCLUDE, Schema, fields, validate

from ingest.adapters import ADAPTERS
from ingest.config import CANONICAL_FIELDS, Config, Source
from ingest.errors import IngestError, Surface


def _codes(surface: Surface) -> dict[int, str]:
    """The code of each status on one surface, from the error classes (one per status)."""
    codes: dict[int, str] = {}
    pending: list[type[IngestError]] = [IngestError]
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls is IngestError or cls.surface != surface:
            continue
        if codes.setdefault(cls.status, cls.code) != cls.code:
            message = f"{surface} errors {codes[cls.status]} and {cls.code} share status {cls.status}"
            raise RuntimeError(message)
    return dict(sorted(codes.items()))


ERROR_CODES = _codes("intake")
ADMIN_ERROR_CODES = ERROR_CODES | _codes("admin")
# "E-mail or phone": a body that names neither is refused (422).
EMAIL_OR_PHONE = [{"required": ["email"]}, {"required": ["phone"]}]
_KINDS = {"form": "forms", "chat": "chats"}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}
}

_HEADER = "header"


def _key(name: str, where: str, description: str) -> dict[str, Any]:
    return {"type": "apiKey", "in": where, "name": name, "description": description}


# How each format authenticates, as OpenAPI security schemes (all of a list together).
# Standard Webhooks: https://www.standardwebhooks.com/ ; the providers: docs/adapters.md.
_STANDARD_WEBHOOKS = {
    "standardWebhooksId": _key("webhook-id", _HEADER, "Standard Webhooks: the delivery id (signed)"),
    "standardWebhooksTimestamp": _key(
        "webhook-timestamp", _HEADER, "Standard Webhooks: Unix seconds, within 5 minutes of our clock"
    ),
    "standardWebhooksSignature": _key(
        "webhook-signature",
        _HEADER,
        "Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` under the whsec_ secret",
    ),
}
SIGNATURES: dict[str, dict[str, dict[str, Any]]] = {
    "json": _STANDARD_WEBHOOKS,
    "hubspot": _STANDARD_WEBHOOKS,
    "tawkto": {"tawkSignature": _key("X-Tawk-Signature", _HEADER, "hex HMAC-SHA1 of the body")},
    "intercom": {
        "intercomSignature": _key("X-Hub-Signature", _HEADER, "`sha1=` + hex HMAC-SHA1 of the body")
    },
    "zendesk": {"zendeskApiKey": _key("X-API-Key", _HEADER, "the webhook's secret")},
    "typeform": {
        "typeformSignature": _key("Typeform-Signature", _HEADER, "`sha256=` + base64 HMAC-SHA256 of the body")
    },
    "webflow": {
        "webflowTimestamp": _key("x-webflow-timestamp", _HEADER, "Unix milliseconds, within 5 minutes"),
        "webflowSignature": _key("x-webflow-signature", _HEADER, "hex HMAC-SHA256 of `timestamp:body`"),
    },
    "netlify": {
        "netlifySignature": _key(
            "X-Webhook-Signature", _HEADER, "HS256 JWS, claims `iss: netlify` and `sha256` of the body"
        )
    },
    "tally": {"tallySignature": _key("Tally-Signature", _HEADER, "base64 HMAC-SHA256 of the body")},
    "crisp": {
        "crispSignature": _key(
            "X-Crisp-Signature", _HEADER, "plugin hooks: hex HMAC-SHA256 of `[timestamp;body]`"
        ),
        "crispTimestamp": _key("X-Crisp-Request-Timestamp", _HEADER, "plugin hooks: within 24 hours"),
    },
    "jotform": {},  # a key in the URL (_URL_KEYS)
    # LiveChat signs nothing: its secret_key travels in the body (see LivechatPayload).
    "livechat": {},
    "html": {},  # a browser: the Origin check instead
}
# Formats whose secret is a query parameter of the URL pasted into the provider.
_URL_KEYS = {"jotform": "the `key` of the webhook URL", "crisp": "website hooks: the URL's secret parameter"}


class _Response(Schema):
    """A response body: documented keys; others may be added (clients ignore them)."""

    class Meta:
        """No additionalProperties: false in the document."""

        unknown = EXCLUDE


class Accepted(_Response):
    """A committed submission (or the first one, for a repeated delivery)."""

    status = fields.String(required=True, validate=validate.OneOf(["created", "duplicate", "updated"]))
    submission_id = fields.UUID(required=True)


class Ignored(_Response):
    """Understood, nothing stored (a chat without contact details, an event we do not store)."""

    status = fields.String(required=True, validate=validate.OneOf(["ignored"]))
    reason = fields.String(required=True)


class Processed(_Response):
    """A delivery of several events (Zendesk): one result per event, in order."""

    status = fields.String(required=True, validate=validate.OneOf(["processed"]))
    results = fields.List(fields.Dict(), required=True)


class Error(_Response):
    """Every error: a machine-readable code, never a submitted value."""

    error = fields.String(required=True)


class ValidationError(_Response):
    """422: which fields failed and why."""

    error = fields.String(required=True, validate=validate.OneOf(["validation_failed"]))
    fields_ = fields.Dict(
        data_key="fields", keys=fields.String(), values=fields.List(fields.String()), required=True
    )


class Done(_Response):
    """An admin action's report: what it found or changed."""

    status = fields.String(required=True)


# The canonical fields take a string or a number (providers send phones as numbers);
# null or "" counts as absent.
_SCALAR = {"type": ["string", "number", "null"]}
_CONSENT_VALUE = "true or false (a checkbox's on/off, yes/no or 1/0 is read too); any other value is a 422"


def _canonical(config: Config, channel: str) -> dict[str, Any]:
    """Canonical JSON (format `json`); every other key, at any depth, is dropped."""
    form = channel == "form"
    field = _SCALAR if form else {"description": "a value that is not usable text is dropped"}
    properties: dict[str, Any] = {name: dict(field) for name in CANONICAL_FIELDS}
    if form:
        properties["email"] |= {"format": "email", "example": "maija@example.fi"}
    properties["consents"] = {
        "type": ["object", "null"],
        "description": f"consent id (of this configuration, else 422) -> {_CONSENT_VALUE}",
        "additionalProperties": {"description": _CONSENT_VALUE},
    }
    if form:  # a chat without contact details is ignored before its consents are read
        properties["consents"]["propertyNames"] = {"enum": sorted(config.consents)}
    schema: dict[str, Any] = {
        "description": "Canonical JSON: "
        + ("an e-mail or a phone is required." if form else "without an e-mail or phone, 202 ignored."),
        "type": "object",
        "properties": properties,
    }
    if form:
        schema["anyOf"] = EMAIL_OR_PHONE
    return schema


_EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
    "OptOut": {
        "description": "A direct-marketing objection: an e-mail, a phone, or both.",
        "type": "object",
        "properties": {
            "email": {"type": ["string", "null"], "format": "email", "description": "null or '' is absent"},
            "phone": {"type": ["string", "null"], "description": "null or '' is absent"},
        },
        "anyOf": EMAIL_OR_PHONE,
    },
    "ProviderPayload": {
        "description": "The provider's own JSON (docs/adapters.md): only the fields it maps are read; "
        "a body that is not its payload is 400, or answered 2xx `ignored` where the provider "
        "would retry a 4xx for ever.",
    },
    "LivechatPayload": {
        "description": "A LiveChat webhook: it carries the secret_key registered with the webhook.",
        "type": "object",
        "required": ["secret_key"],
        "properties": {"secret_key": {"type": "string"}},
    },
    "JotformPost": {
        "description": "A Jotform webhook post: the answers are the JSON text of rawRequest.",
        "type": "object",
        "required": ["submissionID", "rawRequest"],
        "properties": {"submissionID": {"type": "string"}, "rawRequest": {"type": "string"}},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str | dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema) if isinstance(schema, str) else schema}}


def _errors(*statuses: int, codes: dict[int, str] = ERROR_CODES, html: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        schema = "ValidationError" if status == 422 else "Error"  # noqa: PLR2004
        description = "fields invalid" if status == 422 else f"`{codes[status]}`"  # noqa: PLR2004
        content = _json(schema)
        if html and status != 503:  # noqa: PLR2004 - a browser gets the error page, except for a 503
            content["text/html"] = {"schema": {"type": "string"}}
        response: dict[str, Any] = {"description": description, "content": content}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        out[str(status)] = response
    return out


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
    if source.format in _URL_KEYS and not schemes:
        parameter = source.options.get("key_parameter", "key")
        schemes = {f"{source.name}.key": _key(parameter, "query", _URL_KEYS[source.format])}
    return schemes, ([{name: [] for name in schemes}] if schemes else [])


def _success(source: Source) -> dict[str, Any]:
    adapter = ADAPTERS[source.format]
    accepted = ["Accepted", *(["Processed"] if source.format == "zendesk" else [])]
    if source.format == "html":
        page = {"text/html": {"schema": {"type": "string"}}}
        return {
            "201": {"description": "created", "content": _json("Accepted") | page},
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
                "content": _json({"anyOf": [_ref(n) for n in one]}),
            }
        }
    out = {
        "201": {"description": "created", "content": _json("Accepted")},
        "200": {
            "description": "duplicate delivery (the first submission's id)"
            + ("; several events: one result each" if len(accepted) > 1 else ""),
            "content": _json(accepted[0] if len(accepted) == 1 else {"anyOf": [_ref(n) for n in accepted]}),
        },
    }
    if ignored:
        out["202"] = {"description": "understood, nothing stored", "content": _json("Ignored")}
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
            "content": {kind: {"schema": _ref(body)} for kind in sorted(adapter.content_types)},
        },
        "responses": {
            **_success(source),
            **_errors(*((400, 403) if html else (400, 401)), 408, 413, 415, 422, 429, 503, html=html),
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
        "responses": _errors(403),
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
                    "responses": {"200": {"description": "the stamp", "content": _json(stamp)}},
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
        out = {"200": {"description": done, "content": _json("Done")}}
        out |= _errors(401, 403, *statuses, 422, 429, 503, codes=ADMIN_ERROR_CODES)
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
                    "200": {"description": "the export document", "content": _json({"type": "object"})},
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
                "requestBody": {"required": True, "content": _json("OptOut")},
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
                        **_errors(503),
                    },
                },
                "post": {
                    "summary": f"Carry out the {what} (RFC 8058 one-click for unsubscribe), no login",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "done", "content": _page()},
                        "400": invalid,
                        **_errors(503),
                    },
                },
            },
        )


def build_spec(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this deployment: one path per configured source."""
    spec = APISpec(
        title="QualityDesk Ingest", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()]
    )
    for schema in (Accepted, Ignored, Processed, Error, ValidationError, Done):
        spec.components.schema(schema.__name__, schema=schema)
    spec.components.schema("CanonicalFormSubmission", component=_canonical(config, "form"))
    spec.components.schema("CanonicalChatSubmission", component=_canonical(config, "chat"))
    for name, component in _EXTRA_SCHEMAS.items():
        spec.components.schema(name, component=component)
    # Per source, not /v1/{kind}/{source}: what a source accepts and how it signs are its own.
    for _, source in sorted(config.sources.items()):
        _intake(spec, source)
    _admin(spec)
    _links(spec)
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}},
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
                        "200": {"description": "ok", "content": _json(status)},
                        **_errors(503),
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


CONTRACT = (
    'Every error is a JSON object `{"error": code}`. A method a path does not have is answered '
    '405 `{"error": "method_not_allowed"}` with an `Allow` header naming the methods it has '
    "(RFC 9110). A source's POST accepts only the content types listed for it: any other is 415."
)


def render_markdown(document: dict[str, Any]) -> str:
    """The OpenAPI document as Markdown, for docs/api.md (generated, never edited by hand)."""
    lines = [
        f"# {document['info']['title']} HTTP API",
        "",
        "Generated from the service's own OpenAPI document (`GET /openapi.json`) for the",
        "example configuration: `ingest --config deploy/ingest.example.toml openapi --markdown`.",
        "A test fails when this file and the code disagree.",
        "",
        document["info"]["description"],
        "",
    ]
    schemes = document["components"].get("securitySchemes", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation_markdown(method, path, operation, schemes)
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _schema_markdown(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def _operation_markdown(
    method: str, path: str, operation: dict[str, Any], schemes: dict[str, Any]
) -> list[str]:
    lines = [f"## {method.upper()} `{path}`", "", operation["summary"] + ".", ""]
    for requirement in operation.get("security", []):
        lines += ["Authentication (all of):", ""]
        lines += [f"- {_scheme_markdown(schemes[name])}" for name in requirement]
        lines.append("")
    if params := operation.get("parameters", []):
        lines += ["| parameter | in | required | values |", "|---|---|---|---|"]
        for param in params:
            values = ", ".join(f"`{v}`" for v in param["schema"].get("enum", [])) or "string"
            if param.get("description"):
                values += f": {param['description']}"
            required = "yes" if param.get("required") else "no"
            lines.append(f"| `{param['name']}` | {param['in']} | {required} | {values} |")
        lines.append("")
    if body := operation.get("requestBody"):
        lines += ["Request body (any other content type: 415):", ""]
        lines += [f"- `{kind}`: {_schema_name(media)}" for kind, media in body["content"].items()]
        lines.append("")
    lines += ["| status | meaning | body | headers |", "|---|---|---|---|"]
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        bodies = ", ".join(f"{_schema_name(m)} (`{k}`)" for k, m in content.items()) or "-"
        headers = ", ".join(f"`{h}`" for h in response.get("headers", {})) or "-"
        lines.append(f"| {status} | {response['description']} | {bodies} | {headers} |")
    lines.append("")
    return lines


def _scheme_markdown(scheme: dict[str, Any]) -> str:
    if scheme["type"] == "http":
        return f"`Authorization: Bearer <token>`: {scheme.get('description', '')}"
    return f"{scheme['in']} `{scheme['name']}`: {scheme.get('description', '')}"


def _schema_markdown(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    for part in schema.get("allOf", []):
        lines += [f"All of {_schema_name({'schema': part})}.", ""]
    if alternatives := schema.get("anyOf"):
        needs = " or ".join("+".join(f"`{f}`" for f in alt.get("required", [])) for alt in alternatives)
        lines += [f"Required: {needs}.", ""]
    if not schema.get("properties"):
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, spec in schema.get("properties", {}).items():
        kind = spec.get("type", "any")
        if isinstance(kind, list):
            kind = " or ".join(kind)
        if "enum" in spec:
            kind += ": " + ", ".join(f"`{v}`" for v in spec["enum"])
        if "format" in spec:
            kind += f" ({spec['format']})"
        notes = spec.get("description", "-")
        lines.append(f"| `{field}` | {kind} | {'yes' if field in required else 'no'} | {notes} |")
    lines.append("")
    return lines


def _schema_name(media: dict[str, Any]) -> str:
    schema = media.get("schema", {})
    if alternatives := schema.get("anyOf"):
        return " or ".join(_schema_name({"schema": alt}) for alt in alternatives)
    ref = schema.get("$ref", "")
    if not ref:
        return "text" if schema.get("type", "string") == "string" else str(schema.get("type", "text"))
    name = ref.rsplit("/", 1)[-1]
    return f"[{name}](#{name.lower().replace('.', '')})"
