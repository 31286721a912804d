"""The unit tier of the adapters: every sample payload parsed straight through its adapter.

No database, no HTTP, no server: each case builds the adapter from the registry
(ingest/adapters/__init__.py) and a Source from the test config (tests/support.py),
signs the body the way the provider does, builds the InboundRequest as
ingest/web/intake.py does, and runs the adapter's own template (content type,
authenticate, extract). The expected values are the ones the HTTP tests of the same
payloads (tests/adapters/test_<provider>.py, tests/test_forms_*.py) store or answer;
what those tests see after validation (a phone normalised, an invalid one dropped, a
chat waiting for contact details, "no_contact_details") happens after the adapter,
so here the raw values the adapter hands on are asserted, with a note where they differ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest import errors
from ingest.adapters import ADAPTERS
from ingest.adapters.base import Ignored, Item
from ingest.adapters.html import ADAPTER as HTML
from ingest.adapters.html import RENDERED_AT_FIELD, check_origin, make_stamp, stamp_key
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.web.intake import secret_query
from tests.support import (
    ORIGIN,
    PARTNER_SECRET,
    PEPPER,
    base_config_dict,
    config_with_source,
    make_config,
    secrets_environ,
    sign_delivery,
    sign_standard,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
SOURCE = "unit-source"
SECRET = "unit-tier-provider-secret-0123456789"
# A Standard Webhooks secret (json, hubspot); not the README's example one.
WHSEC = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
# The spec's test vector (tests/fixtures/README.md): secret, id, timestamp and signature.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = "1614265330"
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WRONG_SECRET = "someone-elses-secret-0123456789abcdef"
WRONG_WHSEC = "whsec_" + base64.b64encode(b"someone elses secret, 32 bytes!!").decode()
MSG_ID = "msg_unit_tier_0001"  # the webhook-id of json and hubspot deliveries
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "------------------------unittierboundary0123456789"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
STALE = 2 * 24 * 3600.0  # seconds: outside every adapter's window (Crisp's is a day)
PROCESS_TEXT = "I agree to allow Example Company to store and process my personal data."
MARKETING_TEXT = "I agree to receive marketing communications from Example Company."
HTML_FORM = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "Please call me.",
}
CRISP_SESSION = "session_36ba3566-9651-4790-afc8-ffedbccc317f"
ZENDESK_SESSION = "f52b01137aa6c250bc7251fa:26508c10541a4b0ff472e5e2"
LIVECHAT_EVENT = "incoming_event:0affb00a-82d6-4e07-ae61-56ba5c36f743"


# --- sources, bodies, signatures, requests ---------------------------------------------------------


def provider_source(fmt: str, *, secret: str | None = None, **settings: Any) -> Source:
    """A Source of format `fmt` from the test config (json and html: the base config's own)."""
    if fmt == "json":
        channel = settings.pop("channel", "form")
        env = secrets_environ() | {"PARTNER_FORMS_SECRET": secret or PARTNER_SECRET}
        return make_config(base_config_dict(), env).sources[f"partner-{channel}s"]
    if fmt == "html":
        raw = base_config_dict()
        raw["sources"]["website-contact"].update(settings)
        return make_config(raw).sources["website-contact"]
    chat = ADAPTERS[fmt].channels == frozenset({"chat"})
    default = WHSEC if ADAPTERS[fmt].secret_kind == "standard_webhooks" else SECRET
    config = config_with_source(
        SOURCE,
        secrets={"UNIT_SECRET": secret or default},
        channel="chat" if chat else "form",
        format=fmt,
        secret_env="UNIT_SECRET",
        **({"purposes": ["contact"]} | settings),
    )
    return config.sources[SOURCE]


def fixture(name: str) -> bytes:
    """A sample payload's bytes, as stored."""
    return (FIXTURES / name).read_bytes()


def jsonc(name: str) -> bytes:
    """A docs sample printed with // comments (as test_livechat strips them)."""
    return re.sub(r"//[^\n]*", "", (FIXTURES / name).read_text()).encode()


def with_secret_key(body: bytes, secret: str) -> bytes:
    """A LiveChat body: the registration's secret_key travels at the top of the JSON."""
    payload = json.loads(body)
    payload["secret_key"] = secret
    return json.dumps(payload).encode()


def multipart(parts: dict[str, str]) -> bytes:
    """Jotform's multipart POST of a decoded part map (tests/fixtures/jotform/)."""
    boundary = BOUNDARY
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in parts.items()
    ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def netlify_jws(body: bytes, secret: str, at: float) -> str:
    """Netlify's X-Webhook-Signature: HS256 over iss and the body's sha256, valid a minute from `at`."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest(), "exp": int(at) + 60}
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest())
    return f"{head}.{payload}.{signature}"


def signature(source: Source, body: bytes, secret: str, at: float) -> tuple[dict[str, str], str]:
    """The headers and query string that authenticate `body` as signed at `at` with `secret`."""
    fmt = source.format
    if fmt in ("json", "hubspot"):
        headers = sign_standard(body, secret=secret, msg_id=MSG_ID, timestamp=at)
        del headers["Content-Type"]
        return headers, ""
    if fmt == "webflow":
        stamp = str(int(at * 1000))
        return {
            "x-webflow-timestamp": stamp,
            "x-webflow-signature": _hex(secret, f"{stamp}:".encode() + body),
        }, ""
    if fmt == "crisp" and source.options.get("hook") == "plugin":
        stamp = str(int(at * 1000))
        message = f"[{stamp};".encode() + body + b"]"
        return {"X-Crisp-Request-Timestamp": stamp, "X-Crisp-Signature": _hex(secret, message)}, ""
    if fmt == "netlify":
        return {"X-Webhook-Signature": netlify_jws(body, secret, at)}, ""
    if fmt == "html":
        return {"Origin": ORIGIN}, ""
    headers, query = sign_delivery(fmt, body, secret, source.options)  # livechat: in the body
    return headers, urllib.parse.urlencode(query)


def inbound(headers: dict[str, str], query_string: str, body: bytes, received_at: datetime) -> InboundRequest:
    """The InboundRequest ingest/web/intake.py builds from an aiohttp request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return InboundRequest(
        headers=lowered,
        query=secret_query(query_string),
        body=body,
        content_type=lowered.get("content-type", ""),
        received_at=received_at,
    )


def parse(source: Source, request: InboundRequest) -> Sequence[Item]:
    """What intake._process runs: html checks the Origin first and verifies its stamps."""
    adapter = ADAPTERS[source.format]
    if adapter.needs_origin:
        check_origin(source, request)
        return HTML.parse(source, request, stamp_key=stamp_key(PEPPER))
    return adapter.parse(source, request)


Body = bytes | Callable[[Source, float], bytes]


def deliver(
    source: Source,
    body: Body,
    content_type: str = JSON,
    *,
    secret: str | None = None,
    age: float = 0.0,
    headers: dict[str, str] | None = None,
) -> Sequence[Item]:
    """Sign `body` for `source` (with `secret`, `age` seconds ago) and run the adapter on it."""
    now = time.time()
    at = now - age
    secret = secret or (source.secrets[0] if source.secrets else "")
    data = body(source, at) if callable(body) else body
    if source.format == "livechat":
        data = with_secret_key(data, secret)
    signed, query = signature(source, data, secret, at)
    request = inbound(
        signed | {"Content-Type": content_type} | (headers or {}),
        query,
        data,
        datetime.fromtimestamp(now, tz=UTC),
    )
    return parse(source, request)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def jotform(name: str) -> Callable[[Source, float], bytes]:
    return lambda _source, _at: multipart(json.loads((FIXTURES / name).read_text()))


def html_form(values: dict[str, str]) -> Callable[[Source, float], bytes]:
    """A browser's urlencoded post; with min_fill_seconds, a stamp of when the form was shown."""

    def build(source: Source, at: float) -> bytes:
        fields = dict(values)
        if source.min_fill_seconds:
            fields[RENDERED_AT_FIELD] = make_stamp(stamp_key(PEPPER), source.name, at - 30)
        return urllib.parse.urlencode(fields).encode()

    return build


def content_type_of(source: Source) -> str:
    """The media type the provider posts: multipart (Jotform), a browser's form (html), else JSON."""
    return {"jotform": MULTIPART, "html": FORM}.get(source.format, JSON)


# --- every sample payload, extracted --------------------------------------------------------------


def submission(fields: dict[str, object], delivery_id: str | None, consents: Sequence[str] = ()) -> dict:
    return {"fields": fields, "consents": set(consents), "delivery_id": delivery_id}


def ignored(reason: str, delivery_id: str | None) -> dict:
    return {"ignored": reason, "delivery_id": delivery_id}


def case(fixture_id: str, fmt: str, body: Body, expected: dict, **settings: Any):
    return pytest.param(fmt, body, settings, expected, id=fixture_id)


EXTRACTED = [
    # --- crisp, as in test_crisp.py: pieces of a session; operators' words and placeholders never read
    case(
        "crisp-message_send",
        "crisp",
        fixture("crisp/message_send.json"),
        submission(  # "Hey :)"; the visitor493603 nickname is not a name
            {"message": "Hey :)"}, f"{CRISP_SESSION}:message:send:1506985696616:150698569649423"
        ),
    ),
    case(
        "crisp-message_send-compact-plugin-hook",
        "crisp",
        fixture("crisp/message_send-compact.json"),
        submission({"message": "Hey :)"}, f"{CRISP_SESSION}:message:send:1506985696616:150698569649423"),
        options={"hook": "plugin"},
    ),
    case(
        "crisp-session_set_email",
        "crisp",
        fixture("crisp/session_set_email.json"),
        submission({"email": "jane@example.com"}, f"{CRISP_SESSION}:session:set_email:1506985700000"),
    ),
    case(
        "crisp-session_set_phone",
        "crisp",
        fixture("crisp/session_set_phone.json"),
        submission({"phone": "+33612345678"}, f"{CRISP_SESSION}:session:set_phone:1506985710000"),
    ),
    case(
        "crisp-session_set_nickname",
        "crisp",
        fixture("crisp/session_set_nickname.json"),
        submission({"name": "Jane Doe"}, f"{CRISP_SESSION}:session:set_nickname:1506985690000"),
    ),
    case(
        "crisp-message_received",
        "crisp",
        fixture("crisp/message_received.json"),
        ignored("unsupported_event", f"{CRISP_SESSION}:message:received:1506985698000"),
    ),
    # --- hubspot, as in test_hubspot.py: properties by name, consents under content-addressed ids
    case(
        "hubspot-submit_form-legacy_example",
        "hubspot",
        fixture("hubspot/submit_form-legacy_example.json"),
        submission(  # name "Jeff" (firstname), both consents with their words
            {"first_name": "Jeff", "email": "example@example.com"},
            MSG_ID,
            [
                f"hubspot:process:contact:{short_hash(PROCESS_TEXT)}",
                f"hubspot:sub999:direct_marketing:{short_hash(MARKETING_TEXT)}",
            ],
        ),
    ),
    case(
        "hubspot-submit_form-legacy_example-mapped-purposes",
        "hubspot",
        fixture("hubspot/submit_form-legacy_example.json"),
        submission(
            {"first_name": "Jeff", "email": "example@example.com"},
            MSG_ID,
            [
                f"hubspot:process:customer_relationship:{short_hash(PROCESS_TEXT)}",
                f"hubspot:sub999:contact:{short_hash(MARKETING_TEXT)}",
            ],
        ),
        purposes=["contact", "customer_relationship"],
        options={"process_purpose": "customer_relationship", "subscription_purposes": {"999": "contact"}},
    ),
    case(
        "hubspot-submit_form-legitimate_interest",
        "hubspot",
        fixture("hubspot/submit_form-legitimate_interest.json"),
        submission({"first_name": "Jeff", "email": "example@example.com"}, MSG_ID),  # a notice, no consent
    ),
    case(
        "hubspot-submit_form_v3-openapi_example",
        "hubspot",
        fixture("hubspot/submit_form_v3-openapi_example.json"),
        submission(  # no e-mail or phone: the HTTP test's 422 names both
            {},
            MSG_ID,
            [
                f"hubspot:process:contact:{short_hash('<string>')}",
                f"hubspot:sub123:direct_marketing:{short_hash('<string>')}",
            ],
        ),
    ),
    # --- intercom: the cases of test_intercom.py
    case(
        "intercom-conversation_user_created",
        "intercom",
        fixture("intercom/conversation_user_created.json"),
        submission(
            {
                "name": "Jane Doe",
                "email": "jane.doe@example.com",
                "message": "Hi, do you ship to Finland?\n\nWe need 20 licences & an invoice.",
            },
            "notif_b1e6a0c4-7d2f-4f0e-8a5b-2c9d3e4f5a66",
        ),
    ),
    case(
        "intercom-conversation_user_created-anonymous_lead",
        "intercom",
        fixture("intercom/conversation_user_created-anonymous_lead.json"),
        # no contact details: intake answers it ignored, no_contact_details
        submission({"message": "Hi"}, "notif_3d7f1b52-6c1e-4a8e-9a43-0c2f5b7d9e11"),
    ),
    case(
        "intercom-conversation_user_created-api1",
        "intercom",
        fixture("intercom/conversation_user_created-api1.json"),
        # the verbatim lead has no e-mail: intake answers it ignored, no_contact_details
        submission(
            {"name": "Rose Poodle from St. John's", "message": "Hello everyone!"},
            "notif_3ac27816-d27c-45fd-a65a-bbaf021cf780",
        ),
    ),
    case(
        "intercom-user_created-signed",
        "intercom",
        fixture("intercom/user_created-signed.json"),
        ignored("unsupported_event", "notif_78c122d0-23ba-11e4-9464-79b01267cc2e"),
    ),
    case(
        "intercom-ping-compact",
        "intercom",
        fixture("intercom/ping-compact.json"),
        ignored("ping", "notif_78c122d0-23ba-11e4-9464-79b01267cc2e"),
    ),
    # --- jotform, as in test_jotform.py: the decoded part maps, posted as multipart
    case(
        "jotform-minimal_submission",
        "jotform",
        jotform("jotform/minimal_submission.json"),
        submission({"name": "Kin Lane", "email": "kin@example.com"}, "5123456789012345678"),
    ),
    case(
        "jotform-development_support",
        "jotform",
        jotform("jotform/development_support.json"),
        # no e-mail or phone: intake answers it ignored, no_contact_details
        submission({"name": "Britney"}, "3835009994173346677"),
    ),
    # --- livechat, as in test_livechat.py: the secret_key is put into each body as LiveChat sends it
    case(
        "livechat-incoming_chat.reconstructed",
        "livechat",
        fixture("livechat-incoming_chat.reconstructed.json"),
        submission(
            {
                "name": "Thomas Anderson",
                "email": "t.anderson@example.com",
                "phone": "+18008529001",
                "message": "hello there",
            },
            "incoming_chat:PJ0MRSHTDG:K600PKZON8",
        ),
    ),
    case(
        "livechat-incoming_chat.docs-skeleton",
        "livechat",
        jsonc("livechat-incoming_chat.docs-skeleton.jsonc"),
        ignored("no_customer", "incoming_chat:PJ0MRSHTDG:"),
    ),
    case(
        "livechat-incoming_event-message",
        "livechat",
        fixture("livechat/incoming_event-message.json"),
        submission({"message": "hello there"}, LIVECHAT_EVENT),
    ),
    case(
        "livechat-incoming_event-filled_form",
        "livechat",
        fixture("livechat/incoming_event-filled_form.json"),
        submission({"name": "Thomas Anderson", "email": "t.anderson@example.com"}, LIVECHAT_EVENT),
    ),
    case(
        "livechat-incoming_event-system_message",
        "livechat",
        fixture("livechat/incoming_event-system_message.json"),
        ignored("unsupported_event_type", LIVECHAT_EVENT),
    ),
    # --- netlify: the cases of test_netlify.py
    case(
        "netlify-submission",
        "netlify",
        fixture("netlify/submission.json"),
        submission(
            {"name": "Raymond Testing", "email": "raymondcamden@gmail.com", "message": "Default value"},
            "5c3e5813f203baba9782ba13",
        ),
    ),
    # --- tally: the cases of test_tally.py
    case(
        "tally-form_response",
        "tally",
        fixture("tally/form_response.json"),
        submission(
            {"email": "alice@example.com", "phone": "+32491223344", "message": "Hello world"},
            "a4cb511e-d513-4fa5-baee-b815d718dfd1",
        ),
    ),
    case(
        "tally-form_response-configured-key-and-payment-label",
        "tally",
        fixture("tally/form_response.json"),
        submission(
            {
                "name": "Hello",
                "email": "alice@example.com",
                "phone": "+32491223344",
                "message": "Hello world",
            },
            "a4cb511e-d513-4fa5-baee-b815d718dfd1",
        ),
        fields={"name": "question_3EKz4n", "email": "payment (EMAIL)"},
    ),
    # --- tawk.to, as in test_tawkto.py: the delivery id is derived from what is signed
    case(
        "tawkto-chat_start",
        "tawkto",
        fixture("tawkto/chat_start.json"),
        submission(  # V1561719148780935 is tawk.to's made-up name
            {"email": "hello@test.com", "message": "Sample message"},
            "chat:start:70fe3290-99ad-11e9-a30a-51567162179f:2019-06-28T14:03:04.646Z",
        ),
    ),
    case(
        "tawkto-chat_start-compact",
        "tawkto",
        fixture("tawkto/chat_start-compact.json"),
        submission(
            {"email": "hello@test.com", "message": "Sample message"},
            "chat:start:70fe3290-99ad-11e9-a30a-51567162179f:2019-06-28T14:03:04.646Z",
        ),
    ),
    case(
        "tawkto-chat_start-live",
        "tawkto",
        fixture("tawkto/chat_start-live.json"),
        # no e-mail: intake answers it ignored, no_contact_details
        submission(
            {"name": "Ana Gómez", "message": "Nombre de La Empresa : Ana Gómez"},
            "chat:start:898d1600-94d2-11ec-9b8f-4f1e3c0e2a11:2022-02-23T19:48:17.019Z",
        ),
    ),
    case(
        "tawkto-chat_start-prechat-option-off",
        "tawkto",
        fixture("tawkto/chat_start-prechat.json"),
        # the lines stay text: intake answers it ignored, no_contact_details
        submission(
            {
                "name": "Maija Meikäläinen",
                "message": "Name : Maija Meikäläinen\r\nEmail : maija@example.fi\r\n"
                "Phone : 040 123 4567\r\nQuestion : Do you deliver to Oulu?",
            },
            "chat:start:4b2c7e10-5a1f-11ef-8c1d-2f6a9b3c4d51:2024-08-14T09:12:44.311Z",
        ),
    ),
    case(
        "tawkto-chat_start-prechat-option-on",
        "tawkto",
        fixture("tawkto/chat_start-prechat.json"),
        submission(  # the phone as typed; stored as +358401234567 once normalised
            {
                "name": "Maija Meikäläinen",
                "email": "maija@example.fi",
                "phone": "040 123 4567",
                "message": "Name : Maija Meikäläinen\nQuestion : Do you deliver to Oulu?",
            },
            "chat:start:4b2c7e10-5a1f-11ef-8c1d-2f6a9b3c4d51:2024-08-14T09:12:44.311Z",
        ),
        options={"prechat_form": True},
    ),
    case(
        "tawkto-chat_end",
        "tawkto",
        fixture("tawkto/chat_end.json"),
        ignored(
            "unsupported_event", "chat:end:70fe3290-99ad-11e9-a30a-51567162179f:2019-06-28T14:04:08.718Z"
        ),
    ),
    case(
        "tawkto-ticket_create",
        "tawkto",
        fixture("tawkto/ticket_create.json"),
        ignored(
            "agent_ticket", "ticket:create:02598050-99ae-11e9-8887-97564881b95b:2019-06-28T14:07:13.512Z"
        ),
    ),
    # --- typeform: the cases of test_typeform.py
    case(
        "typeform-form_response",
        "typeform",
        fixture("typeform/form_response.json"),
        submission(
            {
                "first_name": "Laura",
                "email": "laura@example.com",
                "message": "It's cold right now! I live in an older medium-sized city with a university. "
                "Geographically, the area is hilly.",
            },
            "LtWXD3crgy",
        ),
    ),
    case(
        "typeform-form_response-configured-refs-titles-and-consent",
        "typeform",
        fixture("typeform/form_response.json"),
        submission(
            {"name": "Laura", "email": "laura@example.com", "message": "2005-10-15"},
            "LtWXD3crgy",
            ["marketing-email-v1"],
        ),
        fields={
            "name": "readable_ref_short_text",
            "message": "WHEN DID YOU MOVE TO THE PLACE WHERE YOU LIVE?",
        },
        consent_fields={"readable_ref_legal": "marketing-email-v1"},
    ),
    # --- webflow: the cases of test_webflow.py
    case(
        "webflow-form_submission-test_submission",
        "webflow",
        fixture("webflow/form_submission-test_submission.json"),
        submission({"email": "hello@gmail.com"}, "66a947f35b9d7ba400e22733"),  # field "Email 2"
    ),
    case(
        "webflow-form_submission",
        "webflow",
        fixture("webflow/form_submission.json"),
        submission(  # the fictional 555 number is handed on; validation drops it (phone None)
            {
                "first_name": "Zaphod",
                "last_name": "Beeblebrox",
                "email": "zaphod@heartofgold.ai",
                "phone": 15550000000,
            },
            "6321ca84df3949bfc6752327",
        ),
    ),
    # --- zendesk, as in test_zendesk.py: one item per event of the batch
    case(
        "zendesk_sunco-conversation_create",
        "zendesk",
        fixture("zendesk_sunco-conversation_create.json"),
        ignored("no_details", "5f74a0d52b5315fc007e798a"),
    ),
    case(
        "zendesk_sunco-conversation_message",
        "zendesk",
        fixture("zendesk_sunco-conversation_message.json"),
        # the display name and text; no e-mail: intake answers it awaiting_contact_details
        submission({"name": "Steve Rogers", "message": "hello"}, "5f74a0d52b5315fc007e798a"),
    ),
    case(
        "zendesk-conversation_create-full_user",
        "zendesk",
        fixture("zendesk/conversation_create-full_user.json"),
        submission(
            {"first_name": "Jane", "last_name": "Doe", "email": "jane.doe@gmail.com"},
            "5f74a0d52b5315fc007e7989",
        ),
    ),
    case(
        "zendesk-conversation_message-full_user",
        "zendesk",
        fixture("zendesk/conversation_message-full_user.json"),
        submission(  # the profile's givenName + surname beat the display name
            {"first_name": "Jane", "last_name": "Doe", "email": "jane.doe@gmail.com", "message": "hello"},
            "5f74a0d52b5315fc007e798b",
        ),
    ),
    case(
        "zendesk-conversation_message-business",
        "zendesk",
        fixture("zendesk/conversation_message-business.json"),
        ignored("business_message", "5f74a0d52b5315fc007e798c"),
    ),
    case(
        "zendesk-conversation_message-form_response",
        "zendesk",
        fixture("zendesk/conversation_message-form_response.json"),
        submission({"name": "Sam Virtanen", "email": "sam.virtanen@example.fi"}, "5f74a0d52b5315fc007e798d"),
    ),
    case(
        "zendesk-receiving_messages-web_user",
        "zendesk",
        fixture("zendesk/receiving_messages-web_user.json"),
        submission({"message": "Hello world"}, "0ca7d56ba7b2e081e479fe9e"),  # "Web User ..." is no name
    ),
    # --- json, as in test_forms_json.py: canonical keys only; webhook-id is the delivery id
    case(
        "standardwebhooks-test_vector",
        "json",
        fixture("standardwebhooks-test_vector.json"),
        submission({}, MSG_ID),  # {"test": ...} holds no canonical key
    ),
    case(
        "json-canonical-payload",
        "json",
        json.dumps({**HTML_FORM, "consents": {"marketing-email-v1": True}, "extra": "x"}).encode(),
        submission(HTML_FORM, MSG_ID, ["marketing-email-v1"]),
    ),
    # --- html, as in test_forms_html.py: no fixture file; the form those tests post
    case(
        "html-urlencoded-form",
        "html",
        html_form(HTML_FORM),
        submission(HTML_FORM, None, ["marketing-email-v1"]),  # the unticked box answers ""
    ),
]


@pytest.mark.parametrize(("fmt", "body", "settings", "expected"), EXTRACTED)
def test_a_sample_payload_is_extracted_as_the_http_tests_store_it(
    fmt: str, body: Body, settings: dict[str, Any], expected: dict
) -> None:
    source = provider_source(fmt, **settings)
    assert source.format == fmt
    assert source.channel in ADAPTERS[fmt].channels
    (item,) = deliver(source, body, content_type_of(source))
    if "ignored" in expected:
        assert isinstance(item, Ignored)
        assert (item.reason, item.delivery_id) == (expected["ignored"], expected["delivery_id"])
        assert item.looks_like_success is False
        return
    assert isinstance(item, RawSubmission)
    assert item.fields == expected["fields"]
    assert set(item.consents) == expected["consents"]
    assert item.delivery_id == expected["delivery_id"]


def fixture_case_id(path: Path) -> str:
    """The id a sample file's cases start with: `<provider>-<name>`, or a shared file's own name."""
    return path.stem if path.parent == FIXTURES else f"{path.parent.name}-{path.stem}"


def test_every_fixture_file_and_every_adapter_has_a_case() -> None:
    assert {param.values[0] for param in EXTRACTED} == set(ADAPTERS)
    ids = {param.id for param in EXTRACTED + NOT_THE_SHAPE}
    files = [p for p in FIXTURES.rglob("*.json*") if "crds" not in p.relative_to(FIXTURES).parts]
    assert len(files) > 40
    for path in files:
        name = fixture_case_id(path)
        assert any(i == name or i.startswith(f"{name}-") for i in ids), name


def test_the_spec_test_vector_signature_from_2021_is_refused_as_stale() -> None:
    # tests/fixtures/README.md: the spec's own secret, id, timestamp and signature.
    source = provider_source("json", secret=SPEC_SECRET)
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": SPEC_TIMESTAMP,
        "webhook-signature": SPEC_SIGNATURE,
        "Content-Type": JSON,
    }
    request = inbound(headers, "", fixture("standardwebhooks-test_vector.json"), datetime.now(UTC))
    with pytest.raises(errors.InvalidSignature):
        parse(source, request)


def test_a_zendesk_batch_is_one_item_per_event_in_order() -> None:
    events = [
        json.loads(fixture(name))["events"][0]
        for name in (
            "zendesk/conversation_create-full_user.json",
            "zendesk/conversation_message-business.json",
            "zendesk/conversation_message-full_user.json",
        )
    ]
    items = deliver(provider_source("zendesk"), json.dumps({"events": events}).encode())
    assert [type(i).__name__ for i in items] == ["RawSubmission", "Ignored", "RawSubmission"]
    assert [i.delivery_id for i in items] == [
        "5f74a0d52b5315fc007e7989",
        "5f74a0d52b5315fc007e798c",
        "5f74a0d52b5315fc007e798b",
    ]
    assert {i.session_key for i in items if isinstance(i, RawSubmission)} == {ZENDESK_SESSION}


# --- refused: wrong signature, stale, wrong content type, not the provider's shape --------------------

INTERCOM = fixture("intercom/conversation_user_created.json")
CHAT_START = fixture("tawkto/chat_start.json")
SET_EMAIL = fixture("crisp/session_set_email.json")
HUBSPOT = fixture("hubspot/submit_form-legacy_example.json")
INCOMING_CHAT = fixture("livechat-incoming_chat.reconstructed.json")
NETLIFY = fixture("netlify/submission.json")
TALLY = fixture("tally/form_response.json")
TYPEFORM = fixture("typeform/form_response.json")
WEBFLOW = fixture("webflow/form_submission-test_submission.json")
ZENDESK = fixture("zendesk/conversation_message-full_user.json")
CANONICAL = json.dumps(HTML_FORM).encode()
PLUGIN = {"options": {"hook": "plugin"}}
STAMPED = {"min_fill_seconds": 3}
# Every adapter with a sample it accepts: each refusal below changes one thing of it.
SAMPLES: dict[str, Body] = {
    "crisp": SET_EMAIL,
    "hubspot": HUBSPOT,
    "intercom": INTERCOM,
    "jotform": jotform("jotform/minimal_submission.json"),
    "json": CANONICAL,
    "livechat": INCOMING_CHAT,
    "netlify": NETLIFY,
    "tally": TALLY,
    "tawkto": CHAT_START,
    "typeform": TYPEFORM,
    "webflow": WEBFLOW,
    "zendesk": ZENDESK,
    "html": html_form(HTML_FORM),
}


def test_every_sample_in_the_refusal_table_is_accepted_as_signed() -> None:
    assert set(SAMPLES) == set(ADAPTERS)
    for fmt, body in SAMPLES.items():
        source = provider_source(fmt)
        (item,) = deliver(source, body, content_type_of(source))
        assert isinstance(item, RawSubmission), fmt


def wrong_secret(fmt: str) -> str:
    return WRONG_WHSEC if ADAPTERS[fmt].secret_kind == "standard_webhooks" else WRONG_SECRET


WRONG_SIGNATURE = [
    pytest.param(fmt, SAMPLES[fmt], settings, errors.InvalidSignature, id=f"{fmt}{suffix}")
    for fmt, settings, suffix in [
        ("crisp", {}, "-website-key"),
        ("crisp", PLUGIN, "-plugin-hook"),
        ("hubspot", {}, ""),
        ("intercom", {}, ""),
        ("jotform", {}, ""),
        ("json", {}, ""),
        ("livechat", {}, ""),
        ("netlify", {}, ""),
        ("tally", {}, ""),
        ("tawkto", {}, ""),
        ("typeform", {}, ""),
        ("webflow", {}, ""),
        ("zendesk", {}, ""),
    ]
]


@pytest.mark.parametrize(("fmt", "body", "settings", "error"), WRONG_SIGNATURE)
def test_a_delivery_signed_with_another_secret_is_refused(
    fmt: str, body: Body, settings: dict[str, Any], error: type[errors.IngestError]
) -> None:
    source = provider_source(fmt, **settings)
    with pytest.raises(error):
        deliver(source, body, content_type_of(source), secret=wrong_secret(fmt))


def test_an_html_post_from_another_origin_is_refused() -> None:
    source = provider_source("html")
    with pytest.raises(errors.OriginNotAllowed):
        deliver(source, html_form(HTML_FORM), FORM, headers={"Origin": "https://evil.example"})


STALE_CASES = [
    pytest.param("json", CANONICAL, {}, errors.InvalidSignature, id="json-webhook-timestamp"),
    pytest.param("hubspot", HUBSPOT, {}, errors.InvalidSignature, id="hubspot-webhook-timestamp"),
    pytest.param("webflow", WEBFLOW, {}, errors.InvalidSignature, id="webflow-x-webflow-timestamp"),
    pytest.param("crisp", SET_EMAIL, PLUGIN, errors.InvalidSignature, id="crisp-plugin-timestamp"),
    pytest.param("netlify", NETLIFY, {}, errors.InvalidSignature, id="netlify-jws-exp"),
    # A browser form's fill-time stamp: expired, it is refused visibly (422), never dropped.
    pytest.param("html", html_form(HTML_FORM), STAMPED, errors.ValidationFailed, id="html-expired-stamp"),
]


@pytest.mark.parametrize(("fmt", "body", "settings", "error"), STALE_CASES)
def test_a_delivery_signed_too_long_ago_is_refused(
    fmt: str, body: Body, settings: dict[str, Any], error: type[errors.IngestError]
) -> None:
    source = provider_source(fmt, **settings)
    content_type = content_type_of(source)
    (item,) = deliver(source, body, content_type)  # the same delivery, signed now, is taken
    assert isinstance(item, RawSubmission)
    with pytest.raises(error):
        deliver(source, body, content_type, age=STALE)


WRONG_CONTENT_TYPE = [
    *(
        pytest.param(fmt, SAMPLES[fmt], {}, "text/plain", id=f"{fmt}-text-plain")
        for fmt in sorted(ADAPTERS)
        if fmt not in ("jotform", "html")
    ),
    pytest.param("crisp", SET_EMAIL, PLUGIN, "text/plain", id="crisp-plugin-text-plain"),
    pytest.param("jotform", SAMPLES["jotform"], {}, JSON, id="jotform-application-json"),
    pytest.param("html", SAMPLES["html"], {}, JSON, id="html-application-json"),
    pytest.param("intercom", INTERCOM, {}, FORM, id="intercom-urlencoded"),
]


@pytest.mark.parametrize(("fmt", "body", "settings", "content_type"), WRONG_CONTENT_TYPE)
def test_a_body_of_another_media_type_is_refused(
    fmt: str, body: Body, settings: dict[str, Any], content_type: str
) -> None:
    source = provider_source(fmt, **settings)
    with pytest.raises(errors.UnsupportedMediaType):
        deliver(source, body, content_type)


NOT_THE_SHAPE = [
    pytest.param("crisp", b"[1, 2]", None, errors.MalformedBody, id="crisp-array"),
    pytest.param(
        "crisp",
        json.dumps({"event": "session:set_email", "data": {"email": "jane@example.com"}}).encode(),
        None,
        errors.MalformedBody,
        id="crisp-no-session",
    ),
    pytest.param("hubspot", b"[1, 2]", None, errors.MalformedBody, id="hubspot-array"),
    pytest.param(
        "hubspot",
        json.dumps({"fields": [], "legalConsentOptions": "yes"}).encode(),
        None,
        errors.ValidationFailed,
        id="hubspot-consent-options-not-an-object",
    ),
    pytest.param("intercom", b"{not json", None, errors.MalformedBody, id="intercom-not-json"),
    pytest.param(
        "jotform",
        lambda _source, _at: multipart({"formID": "203112345678901"}),
        None,
        errors.MalformedBody,
        id="jotform-no-rawRequest",
    ),
    pytest.param("json", b"[1, 2]", None, errors.MalformedBody, id="json-array"),
    pytest.param(
        "json", b'{"email": "a@example.fi", "email": "b"}', None, errors.MalformedBody, id="json-dup-keys"
    ),
    pytest.param(
        "json",
        json.dumps({"email": "a@example.fi", "consents": ["marketing-email-v1"]}).encode(),
        None,
        errors.ValidationFailed,
        id="json-consents-not-an-object",
    ),
    pytest.param(
        "livechat",
        json.dumps(
            {"action": "incoming_event", "payload": {"event": {"id": "e1", "type": "message"}}}
        ).encode(),
        None,
        errors.MalformedBody,
        id="livechat-event-without-chat-id",
    ),
    pytest.param(
        "livechat",
        jsonc("livechat-incoming_event.docs-skeleton.jsonc"),
        None,
        errors.MalformedBody,
        id="livechat-incoming_event.docs-skeleton",  # its event is the docs' empty placeholder
    ),
    pytest.param(
        "netlify", json.dumps({"id": "5c3e5813"}).encode(), None, errors.MalformedBody, id="netlify-no-data"
    ),
    pytest.param("tawkto", b"[1, 2]", None, errors.MalformedBody, id="tawkto-array"),
    pytest.param(
        "zendesk", json.dumps({"events": "x"}).encode(), None, errors.MalformedBody, id="zendesk-events"
    ),
    pytest.param(
        "zendesk",
        json.dumps({"events": [{}] * 101}).encode(),
        None,
        errors.PayloadTooLarge,
        id="zendesk-too-many-events",
    ),
    pytest.param(
        "html", lambda _source, _at: b"email=\xff\xfe", None, errors.MalformedBody, id="html-not-utf8"
    ),
    pytest.param(
        "html",
        lambda _source, _at: (
            b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nmaija@example.fi\r\n'
            b'--b\r\nContent-Disposition: form-data; name="cv"; filename="cv.pdf"\r\n'
            b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--b--\r\n"
        ),
        "multipart/form-data; boundary=b",
        errors.ValidationFailed,
        id="html-file-part",
    ),
]


@pytest.mark.parametrize(("fmt", "body", "content_type", "error"), NOT_THE_SHAPE)
def test_an_authenticated_body_that_is_not_the_providers_shape_is_refused(
    fmt: str, body: Body, content_type: str | None, error: type[errors.IngestError]
) -> None:
    source = provider_source(fmt)
    with pytest.raises(error):
        deliver(source, body, content_type or content_type_of(source))


# Providers that retry any failure and count only 2xx: a signed body they can never fix is
# acknowledged with a reason instead (their module docstrings), so no error class applies.
ACKNOWLEDGED = [
    pytest.param("tally", b"[1, 2]", "unreadable_payload", id="tally-array"),
    pytest.param(
        "tally", json.dumps({"eventType": "FORM_RESPONSE"}).encode(), "unreadable_payload", id="tally-no-id"
    ),
    pytest.param("typeform", b"{not json", "unreadable_payload", id="typeform-not-json"),
    pytest.param("typeform", b'{"event_type": "x"}', "unsupported_event", id="typeform-other-event"),
    pytest.param("webflow", b"{not json", "unreadable_payload", id="webflow-not-json"),
    pytest.param(
        "webflow", b'{"triggerType": "site_publish"}', "unsupported_event", id="webflow-other-trigger"
    ),
    pytest.param("intercom", b'{"topic": "contact.created"}', "unsupported_event", id="intercom-other-topic"),
    pytest.param(
        "livechat", b'{"action": "chat_deactivated"}', "unsupported_event", id="livechat-other-action"
    ),
    pytest.param("tawkto", b"{}", "unsupported_event", id="tawkto-no-event"),
    pytest.param("zendesk", b'{"events": []}', "no_events", id="zendesk-no-events"),
    pytest.param(
        "zendesk", b'{"trigger": "message:appUser"}', "unsupported_webhook_version", id="zendesk-v1"
    ),
]


@pytest.mark.parametrize(("fmt", "body", "reason"), ACKNOWLEDGED)
def test_a_signed_body_the_provider_cannot_fix_is_acknowledged_with_a_reason(
    fmt: str, body: bytes, reason: str
) -> None:
    (item,) = deliver(provider_source(fmt), body)
    assert isinstance(item, Ignored)
    assert item.reason == reason
