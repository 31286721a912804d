"""Canonical JSON signed per Standard Webhooks (webhook-id is the delivery id)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import standardwebhooks

from ingest.adapters.base import BaseAdapter, Item
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.config import CANONICAL_FIELDS, Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import InvalidSignature, ValidationFailed


@functools.lru_cache(maxsize=64)
def _verifier(secret: str) -> standardwebhooks.Webhook:
    # Decoding the secret once per secret, not once per request.
    return standardwebhooks.Webhook(secret)


def verify_standard_webhook(source: Source, request: InboundRequest) -> str:
    """Verify the Standard Webhooks signature on the raw body; return the webhook-id."""
    headers = {
        name: request.headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(headers.values()) or len(headers["webhook-id"]) > 200:  # noqa: PLR2004
        raise InvalidSignature
    for secret in source.secrets:
        try:
            _verifier(secret).verify(request.body, headers, json_parse=False)
        except Exception:  # noqa: BLE001, S112 - every verifier failure (bad base64,
            # a header without a comma, non-UTF-8 body) is the same 401; try the next secret
            continue
        return headers["webhook-id"]
    raise InvalidSignature


class JsonAdapter(BaseAdapter):
    """The service's own JSON format, for partners and custom integrations."""

    name: ClassVar[str] = "json"

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify, then take the canonical keys and the consents object."""
        require_content_type(self, request)
        delivery_id = verify_standard_webhook(source, request)
        payload = parse_json_object(request.body)
        return [canonical_submission(payload, delivery_id, optional_contact=source.channel == "chat")]


def canonical_submission(
    payload: dict[str, Any], delivery_id: str | None, *, optional_contact: bool = False
) -> RawSubmission:
    """Pick the canonical keys; every other key, at any depth, is dropped here."""
    fields = {key: payload[key] for key in CANONICAL_FIELDS if key in payload}
    consents = payload.get("consents", {})
    if consents is None:
        consents = {}
    if not isinstance(consents, dict):
        raise ValidationFailed({"consents": ["Must be an object of consent id to true/false."]})
    return RawSubmission(
        fields=fields,
        consents=dict(consents),
        delivery_id=delivery_id,
        optional_contact=optional_contact,
    )


ADAPTER = JsonAdapter()
