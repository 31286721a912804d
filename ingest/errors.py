"""The closed error vocabulary of DESIGN §3: one class per row, rendered by one middleware."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

# Where an error is answered, for the OpenAPI document (ingest.web.openapi): on every
# submission endpoint, and the admin API too, which shares the limits (intake); on the
# admin API, in place of the intake error of its status (admin); or on no listed
# operation, as for unknown routes and the links of e-mails (other).
Surface = Literal["intake", "admin", "other"]


class IngestError(Exception):
    """A client-facing error with a fixed code and status; never carries submitted values."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    surface: ClassVar[Surface] = "intake"
    headers: Mapping[str, str] = {}

    def body(self) -> dict[str, Any]:
        """Return the JSON body of this error."""
        return {"error": self.code}


class MalformedBody(IngestError):
    """The body could not be parsed (bad JSON, bad encoding, broken multipart)."""

    code = "malformed_body"
    status = 400


class InvalidSignature(IngestError):
    """The signature or shared secret is missing, wrong or expired."""

    code = "invalid_signature"
    status = 401


class OriginNotAllowed(IngestError):
    """A browser post came from an origin the source does not allow."""

    code = "origin_not_allowed"
    status = 403


class UnknownSource(IngestError):
    """No such source, or the source belongs to the other channel."""

    code = "unknown_source"
    status = 404


class PayloadTooLarge(IngestError):
    """The body exceeds the configured limit."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(IngestError):
    """The content type is not one this source's format accepts."""

    code = "unsupported_media_type"
    status = 415


class ValidationFailed(IngestError):
    """Fields are invalid; messages name the field and the rule, never the value."""

    code = "validation_failed"
    status = 422

    def __init__(self, fields: Mapping[str, Sequence[str]]) -> None:
        super().__init__("validation failed")
        self.fields = {name: list(messages) for name, messages in fields.items()}

    def body(self) -> dict[str, Any]:
        """Return the error code and the per-field messages."""
        return {"error": self.code, "fields": self.fields}


class RateLimited(IngestError):
    """Too many requests from this client or to this source."""

    code = "rate_limited"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limited")
        self.headers = {"Retry-After": str(max(1, retry_after))}


class Unavailable(IngestError):
    """The database cannot be reached; the client should retry."""

    code = "unavailable"
    status = 503

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__("unavailable")
        self.headers = {"Retry-After": str(retry_after)}


class Unauthorized(IngestError):
    """Admin API: no valid bearer token."""

    code = "unauthorized"
    status = 401
    surface = "admin"
    headers: Mapping[str, str] = {"WWW-Authenticate": "Bearer"}


class Forbidden(IngestError):
    """Admin API: the token lacks the scope for this action."""

    code = "forbidden"
    status = 403
    surface = "admin"


class NotFound(IngestError):
    """A route or resource that does not exist."""

    code = "not_found"
    status = 404
    surface = "other"


class MethodNotAllowed(IngestError):
    """The route exists but not for this method."""

    code = "method_not_allowed"
    status = 405
    surface = "other"


class ConfigError(Exception):
    """The configuration file is invalid; the message names the key path."""


class RequestTimeout(IngestError):
    """The body did not arrive within the time limit (slow clients)."""

    code = "body_timeout"
    status = 408


class InvalidLink(IngestError):
    """An unsubscribe or confirmation link that is forged, altered or expired."""

    code = "invalid_link"
    status = 400
    surface = "other"
