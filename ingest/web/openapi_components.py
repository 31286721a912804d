"""The parts of the OpenAPI document that no source changes: error codes, signatures, schemas."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate

from ingest.config import CANONICAL_FIELDS, Config
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


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}
}


_HEADER = "header"


def security_key(name: str, where: str, description: str) -> dict[str, Any]:
    """An apiKey security scheme: a header or query parameter a delivery carries."""
    return {"type": "apiKey", "in": where, "name": name, "description": description}


# How each format authenticates, as OpenAPI security schemes (all of a list together).
# Standard Webhooks: https://www.standardwebhooks.com/ ; the providers: docs/adapters.md.
_STANDARD_WEBHOOKS = {
    "standardWebhooksId": security_key("webhook-id", _HEADER, "Standard Webhooks: the delivery id (signed)"),
    "standardWebhooksTimestamp": security_key(
        "webhook-timestamp", _HEADER, "Standard Webhooks: Unix seconds, within 5 minutes of our clock"
    ),
    "standardWebhooksSignature": security_key(
        "webhook-signature",
        _HEADER,
        "Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` under the whsec_ secret",
    ),
}


SIGNATURES: dict[str, dict[str, dict[str, Any]]] = {
    "json": _STANDARD_WEBHOOKS,
    "hubspot": _STANDARD_WEBHOOKS,
    "tawkto": {"tawkSignature": security_key("X-Tawk-Signature", _HEADER, "hex HMAC-SHA1 of the body")},
    "intercom": {
        "intercomSignature": security_key("X-Hub-Signature", _HEADER, "`sha1=` + hex HMAC-SHA1 of the body")
    },
    "zendesk": {"zendeskApiKey": security_key("X-API-Key", _HEADER, "the webhook's secret")},
    "typeform": {
        "typeformSignature": security_key(
            "Typeform-Signature", _HEADER, "`sha256=` + base64 HMAC-SHA256 of the body"
        )
    },
    "webflow": {
        "webflowTimestamp": security_key(
            "x-webflow-timestamp", _HEADER, "Unix milliseconds, within 5 minutes"
        ),
        "webflowSignature": security_key(
            "x-webflow-signature", _HEADER, "hex HMAC-SHA256 of `timestamp:body`"
        ),
    },
    "netlify": {
        "netlifySignature": security_key(
            "X-Webhook-Signature", _HEADER, "HS256 JWS, claims `iss: netlify` and `sha256` of the body"
        )
    },
    "tally": {"tallySignature": security_key("Tally-Signature", _HEADER, "base64 HMAC-SHA256 of the body")},
    "crisp": {
        "crispSignature": security_key(
            "X-Crisp-Signature", _HEADER, "plugin hooks: hex HMAC-SHA256 of `[timestamp;body]`"
        ),
        "crispTimestamp": security_key("X-Crisp-Request-Timestamp", _HEADER, "plugin hooks: within 24 hours"),
    },
    "jotform": {},  # a key in the URL (URL_KEYS)
    # LiveChat signs nothing: its secret_key travels in the body (see LivechatPayload).
    "livechat": {},
    "html": {},  # a browser: the Origin check instead
}


# Formats whose secret is a query parameter of the URL pasted into the provider.
URL_KEYS = {"jotform": "the `key` of the webhook URL", "crisp": "website hooks: the URL's secret parameter"}


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


def canonical_schema(config: Config, channel: str) -> dict[str, Any]:
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


EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
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


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A JSON content entry: a component by name, or an inline schema."""
    return {"application/json": {"schema": ref(schema) if isinstance(schema, str) else schema}}


def error_responses(
    *statuses: int, codes: dict[int, str] = ERROR_CODES, html: bool = False
) -> dict[str, Any]:
    """The error responses of `statuses`, each with its error codes (and a page for browsers)."""
    out: dict[str, Any] = {}
    for status in statuses:
        schema = "ValidationError" if status == 422 else "Error"  # noqa: PLR2004
        description = "fields invalid" if status == 422 else f"`{codes[status]}`"  # noqa: PLR2004
        content = json_content(schema)
        if html and status != 503:  # noqa: PLR2004 - a browser gets the error page, except for a 503
            content["text/html"] = {"schema": {"type": "string"}}
        response: dict[str, Any] = {"description": description, "content": content}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        out[str(status)] = response
    return out


# The contract, as the document's description states it.
CONTRACT = (
    'Every error is a JSON object `{"error": code}`. A method a path does not have is answered '
    '405 `{"error": "method_not_allowed"}` with an `Allow` header naming the methods it has '
    "(RFC 9110). A source's POST accepts only the content types listed for it: any other is 415."
)
