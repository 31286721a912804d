"""Webflow form submissions (Data API v2 `form_submission` webhooks).

Docs: "Working with webhooks" https://developers.webflow.com/data/docs/working-with-webhooks .
x-webflow-signature is the hex HMAC-SHA256 of "<x-webflow-timestamp>:<body>"
under the webhook's secret key (or the OAuth app's client secret); the
timestamp is in milliseconds and must be within 5 minutes of our clock.
Webhooks made in the site dashboard carry no signature: create them through
the API. Webflow's own samples sign `JSON.stringify(req.body)`, so a body that
fails on its raw bytes is tried once more as compact JSON.

`payload.data` is keyed by the form's field names, with no types (`schema`
gives only Webflow element types): fields are mapped by name.

Webflow counts only 200 as delivered and deactivates a webhook that keeps
failing, so a signed delivery that can never be stored (not JSON, no id, no
usable e-mail or phone) is answered 200 `ignored` with a reason, and counted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import (
    Answer,
    as_dict,
    as_list,
    as_str,
    check_mapping,
    compact_json,
    delivery_id,
    form_delivery,
)
from ingest.config import Source
from ingest.domain import InboundRequest
from ingest.errors import InvalidSignature, MalformedBody

TOLERANCE_MS = 5 * 60 * 1000
_TIMESTAMP = re.compile(r"^[0-9]{1,16}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")


class WebflowAdapter(BaseAdapter):
    """A Webflow site's form submissions; fields are mapped by their names in the Designer."""

    name: ClassVar[str] = "webflow"
    # Webflow counts only 200 as delivered; anything else is retried and, repeated,
    # deactivates the webhook ("Working with webhooks").
    success_status: ClassVar[int | None] = 200

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The field and consent mapping must name fields."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify signature and timestamp, then read one form submission."""
        require_content_type(self, request)
        verify(source, request)
        try:
            body = parse_json_object(request.body)
        except MalformedBody:
            return [Ignored("unreadable_payload")]  # signed by Webflow: a 400 would only be retried
        payload = body.get("payload")
        event_id = delivery_id(as_dict(payload).get("id"))
        if "triggerType" not in body and isinstance(body.get("data"), dict) and "_id" in body:
            # A legacy (v1) form_submission webhook: the submission itself, keyed by `_id`
            # (developers.webflow.com/data/v1.0.0/reference/form_submission), signed alike.
            payload, event_id = body, delivery_id(body.get("_id"))
        elif body.get("triggerType") != "form_submission":
            return [Ignored("unsupported_event", event_id)]
        if event_id is None or not isinstance(payload, dict):
            return [Ignored("unreadable_payload", event_id)]
        answers = read_answers(payload)
        return form_delivery(answers, source, event_id)


def verify(source: Source, request: InboundRequest) -> None:
    """Check x-webflow-signature over "timestamp:body" and the 5-minute window."""
    timestamp = request.headers.get("x-webflow-timestamp", "").strip()
    signature = request.headers.get("x-webflow-signature", "").strip()
    require(bool(_TIMESTAMP.match(timestamp)) and bool(_SIGNATURE.match(signature)))
    now_ms = int(request.received_at.timestamp() * 1000)
    require(abs(now_ms - int(timestamp)) <= TOLERANCE_MS)
    given = signature.lower().encode("ascii")
    prefix = timestamp.encode("ascii") + b":"
    if _signed(source, prefix + request.body, given):
        return
    try:
        compact = compact_json(parse_json_object(request.body))
    except MalformedBody:
        raise InvalidSignature from None
    require(compact != request.body and _signed(source, prefix + compact, given))


def _signed(source: Source, message: bytes, given: bytes) -> bool:
    return secret_matches(
        source.secrets, lambda key: hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii"), given
    )


def read_answers(payload: dict[str, Any]) -> list[Answer]:
    """One answer per submitted field, named by its field name (and element id when the schema has it)."""
    schema: dict[str, dict[str, Any]] = {}
    for item in as_list(payload.get("schema")):
        if isinstance(item, dict) and as_str(item.get("fieldName")):
            schema.setdefault(item["fieldName"], item)
    answers = []
    for name, value in as_dict(payload.get("data")).items():
        described = schema.get(name, {})
        element_id = as_str(described.get("fieldElementId"))
        answers.append(
            Answer(
                identifiers=(name, element_id) if element_id else (name,),
                type=as_str(described.get("fieldType")),
                value=value,
            )
        )
    return answers


ADAPTER = WebflowAdapter()
