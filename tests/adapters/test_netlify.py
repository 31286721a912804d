"""Netlify Forms outgoing webhooks ("New form submission"), signed with a JWS.

Payload: tests/fixtures/netlify/submission.json. Netlify publishes no sample body; this is the
capture in Raymond Camden's "Customized Form Handling on Netlify with Serverless Functions"
(https://www.raymondcamden.com/2019/01/15/customized-form-handling-on-netlify-with-serverless-functions).
Signature per "Payload signature" in Netlify's "Deploy notifications"
(https://docs.netlify.com/site-deploys/deploy-notifications/).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.netlify import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature, MalformedBody
from tests.support import config_with_source, dump_database

SECRET = "netlify-jws-secret-0123456789abcdef"
URL = "/v1/forms/netlify-contact"
SAMPLE = json.loads((Path(__file__).parents[1] / "fixtures" / "netlify" / "submission.json").read_text())


def netlify_config(secrets=(SECRET,), **source):
    names = [f"NETLIFY_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "netlify-contact",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="netlify",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(claims: dict, secret: str = SECRET, header: dict | None = None, digest=hashlib.sha256) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{payload}".encode(), digest).digest()
    return f"{head}.{payload}.{b64url(signature)}"


def signed(payload: object, secret: str = SECRET, **claims) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    token = jws({"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest()} | claims, secret)
    return body, {"X-Webhook-Signature": token, "Content-Type": "application/json"}


def sample() -> dict:
    return copy.deepcopy(SAMPLE)


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type=headers.get("Content-Type", ""),
        received_at=datetime.now(UTC),
    )


async def test_the_documented_submission_stores_only_name_email_and_message(make_client, db):
    client = await make_client(netlify_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel FROM crm.submissions s "
        "JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Raymond Testing",
        "email": "raymondcamden@gmail.com",
        "phone": None,
        "message": "Default value",  # data.comments
        "source": "netlify-contact",
        "channel": "form",
    }
    stored = await dump_database(db)
    for dropped in ("76.72.11.11", "5c3a051bdbfb660008114ddb", "codabreaker", "Contact Form", "<strong>"):
        assert dropped not in stored  # IP, form id, site, form name, summary


def test_the_computed_signature_vector_verifies():
    # Research brief section 7 (computed with Python hmac/hashlib, not published by Netlify).
    body = b'{"id":"5c3e5813f203baba9782ba13","form_name":"Contact Form"}'
    token = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJpc3MiOiJuZXRsaWZ5Iiwic2hhMjU2IjoiNGFjZGVkN2JlNTllMWFiMzc4ZjMyNDRkMmJlNWY3N2Y3MGFjMGZhZmExMTI3Mjc1NTlhZGNhZDBhYTM0MDc5YSJ9."
        "zwF4z8_mEbxrFNTlBQ8z7aZmRW-Ad4cixg9KpZJZBk4"
    )
    source = netlify_config(secrets=("test_secret",)).sources["netlify-contact"]
    headers = {"X-Webhook-Signature": token, "Content-Type": "application/json"}
    with pytest.raises(MalformedBody):  # the signature holds; the body has no data
        ADAPTER.parse(source, request(body, headers))
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request(body + b" ", headers))


@dataclass(frozen=True)
class Case:
    """What a mangler may use to build a bad signature for the body sent."""

    digest: str  # hex SHA-256 of the body sent
    other_digest: str
    token: str  # a valid signature of the body sent


def _resign(
    token: str, claims_b64: str | None = None, header: dict | None = None, secret: str = SECRET
) -> str:
    head, claims, _ = token.split(".")
    head = b64url(json.dumps(header).encode()) if header else head
    claims = claims_b64 or claims
    signature = hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
    return f"{head}.{claims}.{b64url(signature)}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: jws({"iss": "netlify", "sha256": c.digest}, secret="wrong"),
        lambda c: jws({"iss": "netlify", "sha256": c.digest}, header={"alg": "none"}).rsplit(".", 1)[0] + ".",
        lambda c: jws(
            {"iss": "netlify", "sha256": c.digest},
            header={"alg": "HS512", "typ": "JWT"},
            digest=hashlib.sha512,
        ),
        lambda c: _resign(c.token, header={"alg": "HS256", "crit": ["b64"], "b64": False}),
        lambda c: jws({"iss": "someone-else", "sha256": c.digest}),
        lambda c: jws({"sha256": c.digest}),
        lambda c: jws({"iss": "netlify", "sha256": c.other_digest}),
        lambda _: jws({"iss": "netlify"}),
        lambda _: jws({"iss": "netlify", "sha256": 42}),
        lambda _: jws({"iss": "netlify", "sha256": "é" * 64}),
        lambda c: jws({"iss": "netlify", "sha256": c.digest, "exp": time.time() - 3600}),
        lambda c: jws({"iss": "netlify", "sha256": c.digest, "exp": "never"}),
        lambda c: jws({"iss": "netlify", "sha256": c.digest, "nbf": time.time() + 3600}),
        lambda c: _resign(c.token, claims_b64=b64url(b"not json")),
        lambda c: _resign(c.token, claims_b64=b64url(b"[1]")),
        lambda c: c.token + "=",
        lambda c: c.token.replace(".", "..", 1),
        lambda c: c.token.rsplit(".", 1)[0],
        lambda c: "Bearer " + c.token,
        lambda c: "é." + c.token,
        lambda c: c.token.split(".")[0] + ".é." + c.token.split(".")[2],
        lambda _: "",
    ],
    ids=[
        "wrong-secret",
        "alg-none",
        "alg-hs512",
        "crit",
        "other-issuer",
        "no-issuer",
        "other-body",
        "no-hash",
        "hash-not-text",
        "hash-not-ascii",
        "expired",
        "exp-not-a-number",
        "not-yet-valid",
        "claims-not-json",
        "claims-not-object",
        "padded",
        "four-parts",
        "two-parts",
        "bearer-prefix",
        "header-not-base64url",
        "claims-not-base64url",
        "empty",
    ],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(netlify_config())
    body, headers = signed(SAMPLE)
    case = Case(
        digest=hashlib.sha256(body).hexdigest(),
        other_digest=hashlib.sha256(body + b"x").hexdigest(),
        token=headers["X-Webhook-Signature"],
    )
    headers["X-Webhook-Signature"] = mangle(case)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_a_missing_signature_header_gets_401(make_client):
    client = await make_client(netlify_config())
    body = json.dumps(SAMPLE).encode()
    response = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 401


async def test_time_claims_within_their_window_and_an_upper_case_hash_verify(make_client):
    client = await make_client(netlify_config())
    body = json.dumps(SAMPLE).encode()
    token = jws(
        {
            "iss": "netlify",
            "sha256": hashlib.sha256(body).hexdigest().upper(),
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "nbf": int(time.time()),
        }
    )
    response = await client.post(
        URL, data=body, headers={"X-Webhook-Signature": token, "Content-Type": "application/json"}
    )
    assert response.status == 201


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client):
    new = "new-netlify-secret-9876543210"
    client = await make_client(netlify_config(secrets=(SECRET, new)))
    for i, secret in enumerate((SECRET, new)):
        payload = sample()
        payload["id"] = f"5c3e5813f203baba9782ba1{i}"
        body, headers = signed(payload, secret=secret)
        assert (await client.post(URL, data=body, headers=headers)).status == 201


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(netlify_config())
    body, headers = signed(SAMPLE)
    first = await (await client.post(URL, data=body, headers=headers)).json()
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_a_submission_wrapped_as_a_function_payload_is_accepted(make_client, db):
    client = await make_client(netlify_config())
    body, headers = signed({"payload": SAMPLE})
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT email FROM crm.contacts") == "raymondcamden@gmail.com"


async def test_a_submission_without_email_or_phone_is_acknowledged_and_ignored(make_client, db):
    # DESIGN §8 / issue 16.2: a provider's webhook cannot fix it; a 4xx is only retried.
    payload = sample()
    del payload["data"]["email"]
    client = await make_client(netlify_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_netlifys_derived_top_level_email_is_never_used(make_client, db):
    payload = sample()
    payload["data"] = {"name": "Raymond Testing", "ip": "76.72.11.11"}  # email only at top level
    client = await make_client(netlify_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_inputs_are_matched_by_name_or_label_and_the_fields_table_overrides(make_client, db):
    payload = sample()
    payload["data"] = {
        "your-email": "jo@example.fi",
        "tel": "040 123 4567",
        "first_name": "Jo",
        "last_name": "Example",
        "details": "Please call",
        "comments": "Not this one",
        "user_agent": "Mozilla/5.0",
        "referrer": "https://www.example.com/contact",
        "form-name": "contact",
        "bot-field": "",
    }
    payload["ordered_human_fields"] = [
        {"title": "E-mail address", "name": "your-email", "value": "jo@example.fi"},
        {"title": "Mobile", "name": "tel", "value": "040 123 4567"},
    ]
    config = netlify_config(fields={"message": "details"})
    client = await make_client(config)
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Jo Example",
        "email": "jo@example.fi",
        "phone": "+358401234567",
        "message": "Please call",
    }
    stored = await dump_database(db)
    for dropped in ("Mozilla", "www.example.com/contact", "Not this one"):
        assert dropped not in stored


async def test_a_ticked_checkbox_named_in_consent_fields_grants_consent(make_client, db):
    payload = sample()
    payload["data"]["newsletter"] = "on"
    client = await make_client(netlify_config(consent_fields={"newsletter": "marketing-email-v1"}))
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


async def test_an_absent_checkbox_named_in_consent_fields_is_not_granted(make_client, db):
    client = await make_client(netlify_config(consent_fields={"newsletter": "marketing-email-v1"}))
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is False


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p["data"].update(email=None),
        lambda p: p["data"].update(email=["raymondcamden@gmail.com"]),
        lambda p: p["data"].update(email={"value": "raymondcamden@gmail.com"}),
        lambda p: p["data"].update(email=12.5),
        lambda p: p["data"].update(name=True, comments=["a", "b"]),
        lambda p: p["data"].update(name="<b>Ray</b>\x00<script>alert(1)</script>"),
        lambda p: p["data"].update({"": "x", "phone": 358401234567}),
        lambda p: p.update(ordered_human_fields="x", human_fields=None),
        lambda p: p.update(ordered_human_fields=[None, 1, {"name": 1, "title": []}, {"name": "email"}]),
        lambda p: p.update(id=24),
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, mangle):
    client = await make_client(netlify_config())
    payload = sample()
    mangle(payload)
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (201, 202)


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {"email": "a@example.fi"}},
        {"id": None, "data": {"email": "a@example.fi"}},
        {"id": "x" * 201, "data": {"email": "a@example.fi"}},
        {"id": "5c3e5813f203baba9782ba13", "data": "email=a@example.fi"},
        {"id": "5c3e5813f203baba9782ba13"},
        {"payload": "x"},
        b"{not json",
        b"[]",
    ],
)
async def test_a_body_without_a_usable_id_or_data_gets_400(make_client, payload):
    client = await make_client(netlify_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 400


def test_parse_returns_one_submission_with_the_submission_id_as_delivery_id():
    source = netlify_config().sources["netlify-contact"]
    items = ADAPTER.parse(source, request(*signed(SAMPLE)))
    assert len(items) == 1
    assert isinstance(items[0], RawSubmission)
    assert items[0].delivery_id == "5c3e5813f203baba9782ba13"
    assert items[0].fields == {
        "name": "Raymond Testing",
        "email": "raymondcamden@gmail.com",
        "message": "Default value",
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"fields": {"email": " "}}, "sources.netlify-contact.fields.email: must name a provider field"),
        ({"options": {"wrapped": True}}, "sources.netlify-contact.options.wrapped: unknown option"),
    ],
)
def test_a_mapping_that_cannot_work_is_a_config_error_naming_the_key(source, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        netlify_config(**source)


async def test_a_mapped_field_missing_from_a_submission_is_counted_by_its_config_key(make_client, db):
    # Issue 16.4: a renamed form field must be noticed, for Netlify as for the others.
    from tests.adapters._metrics import metric_value

    client = await make_client(netlify_config(fields={"message": "renamed_field"}))
    body, headers = signed(sample())
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    name = "ingest_mapped_field_absent_total"
    assert await metric_value(client, name, source="netlify-contact", field="fields.message") == 1
