"""Netlify Forms outgoing webhooks ("New form submission"), signed with a JWS in X-Webhook-Signature.

Docs: "Form notifications" https://docs.netlify.com/forms/notifications/ and the
"Payload signature" section of "Deploy notifications"
https://docs.netlify.com/site-deploys/deploy-notifications/ : with a "JWS secret
token" set, X-Webhook-Signature is a compact JWS (HS256 under that token) whose
claims are `iss: "netlify"` and `sha256`, the hex SHA-256 of the raw body. The
algorithm is pinned (no `none`, no other HMAC); `exp`, when present, is honoured.

The body is the submission object (also accepted wrapped as `{"payload": ...}`,
the shape a `submission-created` function sees); `id` is the delivery id. Only
`data` (the form's own input names) is read, labelled by `ordered_human_fields`;
Netlify's additions (`ip`, `user_agent`, `referrer`) and its derived
conveniences (`first_name` split, `summary`, ...) are never read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import (
    Answer,
    as_dict,
    as_list,
    as_str,
    check_mapping,
    delivery_id,
    form_delivery,
)
from ingest.config import Source
from ingest.domain import InboundRequest
from ingest.errors import InvalidSignature, MalformedBody

ISSUER = "netlify"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 300  # clock skew allowed around exp/nbf
# Added by Netlify or the form's plumbing, never the person's answers.
_NOT_ANSWERS = frozenset({"ip", "user_agent", "referrer", "form-name", "bot-field", "g-recaptcha-response"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class NetlifyAdapter(BaseAdapter):
    """Netlify Forms submissions; inputs are mapped by their name or label."""

    name: ClassVar[str] = "netlify"

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The field and consent mapping must name fields."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify the JWS over the raw body, then read one submission."""
        require_content_type(self, request)
        verify(source, request)
        payload = parse_json_object(request.body)
        if "data" not in payload and isinstance(payload.get("payload"), dict):
            payload = payload["payload"]
        submission_id = delivery_id(payload.get("id"))
        data = payload.get("data")
        if submission_id is None or not isinstance(data, dict):
            raise MalformedBody
        answers = read_answers(data, payload.get("ordered_human_fields"))
        return form_delivery(answers, source, submission_id)


def verify(source: Source, request: InboundRequest) -> None:
    """X-Webhook-Signature: an HS256 JWS under a configured secret, iss netlify, sha256 of the body."""
    parts = request.headers.get("x-webhook-signature", "").strip().split(".")
    require(len(parts) == 3)  # noqa: PLR2004 - header.claims.signature
    header_b64, claims_b64, signature_b64 = parts
    header = _json_segment(header_b64)
    # Pinned: a token naming another algorithm (none, HS512, RS256...) is refused outright.
    require(header.get("alg") == ALGORITHM and "crit" not in header)
    claims_bytes = _b64url(claims_b64)
    given = _b64url(signature_b64)
    signing_input = f"{header_b64}.{claims_b64}".encode("ascii")  # both checked base64url above
    require(
        secret_matches(
            source.secrets, lambda key: hmac.new(key, signing_input, hashlib.sha256).digest(), given
        )
    )
    try:
        claims = parse_json_object(claims_bytes)
    except MalformedBody:
        raise InvalidSignature from None
    require(claims.get("iss") == ISSUER)
    digest = claims.get("sha256")
    require(isinstance(digest, str) and digest.isascii())
    expected = hashlib.sha256(request.body).hexdigest().encode()
    require(hmac.compare_digest(str(digest).lower().encode(), expected))
    now = request.received_at.timestamp()
    require(_time_claim(claims.get("exp"), lambda exp: now <= exp + LEEWAY_SECONDS))
    require(_time_claim(claims.get("nbf"), lambda nbf: now >= nbf - LEEWAY_SECONDS))


def _b64url(segment: str) -> bytes:
    """Decode one unpadded base64url JWS segment; anything else is an invalid signature."""
    require(bool(_B64URL.fullmatch(segment)) and len(segment) % 4 != 1)
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidSignature from None


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        return parse_json_object(_b64url(segment))
    except MalformedBody:
        raise InvalidSignature from None


def _time_claim(value: object, check: Callable[[float], bool]) -> bool:
    """An absent time claim passes; a present one must be a number that passes `check`."""
    if value is None:
        return True
    # No float(): a 400-digit int would overflow; Python compares int and float exactly.
    return isinstance(value, int | float) and not isinstance(value, bool) and check(value)


def read_answers(data: dict[str, Any], ordered: object) -> list[Answer]:
    """The form's inputs by name, with their label when Netlify lists one."""
    labels: dict[str, str] = {}
    for field in as_list(ordered):
        name, title = as_str(as_dict(field).get("name")), as_str(as_dict(field).get("title"))
        if name and title:
            labels.setdefault(name, title)
    answers = []
    for name, value in data.items():
        if not name or name in _NOT_ANSWERS:
            continue
        label = labels.get(name)
        answers.append(Answer(identifiers=(name, label) if label else (name,), type=None, value=value))
    return answers


ADAPTER = NetlifyAdapter()
