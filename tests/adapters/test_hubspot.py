"""HubSpot Forms API v3 submission bodies, signed per Standard Webhooks.

Payloads: tests/fixtures/hubspot/submit_form-legacy_example.json, the "Example request JSON" of
HubSpot's "Submit data to a form" (https://legacydocs.hubspot.com/docs/methods/forms/submit_form),
and submit_form_v3-openapi_example.json, the request example of "Submit data to a form
(supporting authentication)" (https://developers.hubspot.com/docs/methods/forms/submit_form_v3).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.hubspot import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError
from tests.support import (
    base_config_dict,
    config_with_source,
    dump_database,
    make_config,
    secrets_environ,
    sign_standard,
)

SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
URL = "/v1/forms/hubspot-site"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "hubspot"
SAMPLE = json.loads((FIXTURES / "submit_form-legacy_example.json").read_text())
OPENAPI = json.loads((FIXTURES / "submit_form_v3-openapi_example.json").read_text())
PROCESS_TEXT = "I agree to allow Example Company to store and process my personal data."
MARKETING_TEXT = "I agree to receive marketing communications from Example Company."


def hubspot_config(secrets=(SECRET,), **source):
    names = [f"HUBSPOT_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "hubspot-site",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="hubspot",
        secret_env=names,
        **({"purposes": ["contact"]} | source),
    )


def signed(payload: object, secret: str = SECRET, msg_id: str | None = None, timestamp: float | None = None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, sign_standard(body, secret=secret, msg_id=msg_id, timestamp=timestamp)


def sample() -> dict:
    return copy.deepcopy(SAMPLE)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type=headers.get("Content-Type", ""),
        received_at=datetime.now(UTC),
    )


async def test_the_documented_example_stores_the_contact_and_both_consents_with_their_words(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, c.marketing_allowed, s.message, s.purposes, s.source "
        "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Jeff",
        "email": "example@example.com",
        "phone": None,
        "marketing_allowed": True,  # the ticked communication (999) is direct marketing by default
        "message": None,
        "purposes": ["contact", "direct_marketing"],
        "source": "hubspot-site",
    }
    texts = {
        r["consent_id"]: (r["purpose"], r["text"])
        for r in await db.fetch("SELECT * FROM ingest.consent_texts WHERE consent_id LIKE 'hubspot:%'")
    }
    assert texts == {
        f"hubspot:process:contact:{short_hash(PROCESS_TEXT)}": ("contact", PROCESS_TEXT),
        f"hubspot:sub999:direct_marketing:{short_hash(MARKETING_TEXT)}": ("direct_marketing", MARKETING_TEXT),
    }
    consents = {r["purpose"]: r["granted"] for r in await db.fetch("SELECT * FROM crm.consents")}
    assert consents == {"contact": True, "direct_marketing": True}
    stored = await dump_database(db)
    for dropped in (":hutk", "www.example.com/page", "Example page", "1517927174000"):
        assert dropped not in stored  # context (cookie, page) and submittedAt


async def test_the_event_records_the_hash_of_the_exact_words(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    rows = await db.fetch(
        "SELECT e.text_sha256, t.text FROM ingest.consent_events e JOIN ingest.consent_texts t USING (consent_id)"
    )
    assert {r["text_sha256"] for r in rows} == {
        hashlib.sha256(t.encode()).hexdigest() for t in (PROCESS_TEXT, MARKETING_TEXT)
    }


async def test_an_unticked_communication_is_recorded_as_not_granted(make_client, db):
    payload = sample()
    payload["legalConsentOptions"]["consent"]["communications"][0]["value"] = False
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetchval("SELECT granted FROM crm.consents WHERE purpose = 'direct_marketing'") is False
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact"]


async def test_a_communication_without_a_value_is_not_granted(make_client, db):
    payload = sample()
    del payload["legalConsentOptions"]["consent"]["communications"][0]["value"]
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False


async def test_options_map_the_subscription_and_the_consent_to_process_to_purposes(make_client, db):
    config = hubspot_config(
        purposes=["contact", "customer_relationship"],
        options={"process_purpose": "customer_relationship", "subscription_purposes": {"999": "contact"}},
    )
    client = await make_client(config)
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    rows = await db.fetch("SELECT consent_id, purpose FROM crm.consents ORDER BY purpose")
    assert [(r["consent_id"], r["purpose"]) for r in rows] == [
        (f"hubspot:sub999:contact:{short_hash(MARKETING_TEXT)}", "contact"),
        (f"hubspot:process:customer_relationship:{short_hash(PROCESS_TEXT)}", "customer_relationship"),
    ]
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False


async def test_a_consent_purpose_missing_from_the_config_is_recorded_but_adds_no_purpose(make_client, db):
    # "services" is a purpose of the notice but not defined in this config's [purposes].
    config = hubspot_config(options={"subscription_purposes": {"999": "services"}})
    assert "services" not in config.purposes
    client = await make_client(config)
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact"]
    assert await db.fetchval("SELECT granted FROM crm.consents WHERE purpose = 'services'") is True


async def test_a_config_without_direct_marketing_still_accepts_a_ticked_communication(make_client, db):
    raw = base_config_dict()
    del raw["purposes"]["direct_marketing"]
    raw["consents"] = {}
    del raw["sources"]["website-contact"]["consent_fields"]
    raw["sources"]["hubspot-site"] = {
        "channel": "form",
        "format": "hubspot",
        "purposes": ["contact"],
        "secret_env": "HUBSPOT_SECRET",
    }
    client = await make_client(make_config(raw, secrets_environ() | {"HUBSPOT_SECRET": SECRET}))
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact"]


async def test_new_wording_gets_a_new_consent_id_and_the_same_wording_reuses_it(make_client, db):
    client = await make_client(hubspot_config())
    reworded = sample()
    reworded["fields"][0]["value"] = "other@example.com"
    reworded["legalConsentOptions"]["consent"]["communications"][0]["text"] = "Send me news, please."
    for payload in (SAMPLE, SAMPLE, reworded):
        body, headers = signed(payload)
        assert (await client.post(URL, data=body, headers=headers)).status == 201
    ids = [
        r["consent_id"]
        for r in await db.fetch(
            "SELECT consent_id FROM ingest.consent_texts WHERE consent_id LIKE 'hubspot:%' ORDER BY consent_id"
        )
    ]
    assert ids == sorted(
        [
            f"hubspot:process:contact:{short_hash(PROCESS_TEXT)}",
            f"hubspot:sub999:direct_marketing:{short_hash(MARKETING_TEXT)}",
            f"hubspot:sub999:direct_marketing:{short_hash('Send me news, please.')}",
        ]
    )
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 6


async def test_legitimate_interest_records_no_consent_event(make_client, db):
    payload = sample()
    payload["legalConsentOptions"] = {
        "legitimateInterest": {
            "value": True,
            "subscriptionTypeId": 999,
            "legalBasis": "LEAD",
            "text": "We process your data to answer your request.",
        }
    }
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 0
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact"]
    # The words are kept as the notice shown (issue 16 §1), not as a consent.
    assert await db.fetchval("SELECT text FROM ingest.submission_notices") == (
        "We process your data to answer your request."
    )


async def test_the_schema_example_with_placeholders_gets_422_not_a_server_error(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(OPENAPI)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert set((await response.json())["fields"]) == {"email", "phone"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_the_schema_example_with_an_email_records_consent_but_not_legitimate_interest(make_client, db):
    payload = copy.deepcopy(OPENAPI)
    payload["fields"] = [{"objectTypeId": "0-1", "name": "email", "value": "lead@example.com"}]
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    rows = await db.fetch("SELECT consent_id, purpose, granted FROM crm.consents ORDER BY purpose")
    assert [tuple(r) for r in rows] == [
        (f"hubspot:process:contact:{short_hash('<string>')}", "contact", True),
        (f"hubspot:sub123:direct_marketing:{short_hash('<string>')}", "direct_marketing", True),
    ]
    # Legitimate interest is no consent row; its basis is kept with the notice shown.
    assert await db.fetchval("SELECT provider_basis FROM ingest.submission_notices") == "CUSTOMER"


async def test_phone_mobilephone_and_message_fill_their_fields(make_client, db):
    payload = sample()
    payload["fields"] += [
        {"objectTypeId": "0-2", "name": "phone", "value": "+358 9 123 4567"},  # the company's
        {"objectTypeId": "0-1", "name": "mobilephone", "value": "040 123 4567"},
        {"objectTypeId": "0-1", "name": "lastname", "value": "Example"},
        {"objectTypeId": "0-1", "name": "message", "value": "Call me"},
        {"objectTypeId": "0-1", "name": "company", "value": "Acme Oy"},
    ]
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.phone, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {"name": "Jeff Example", "phone": "+358401234567", "message": "Call me"}
    assert "Acme Oy" not in await dump_database(db)


async def test_the_fields_table_names_a_property_by_name_or_object_and_name(make_client, db):
    payload = sample()
    payload["fields"] += [
        {"objectTypeId": "0-2", "name": "phone", "value": "+358 9 123 4567"},
        {"objectTypeId": "0-1", "name": "how_can_we_help", "value": "Quote please"},
    ]
    config = hubspot_config(fields={"phone": "0-2/phone", "message": "how_can_we_help"})
    client = await make_client(config)
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow(
        "SELECT c.phone, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {"phone": "+35891234567", "message": "Quote please"}


async def test_a_configured_consent_field_is_read_from_the_properties_too(make_client, db):
    payload = sample()
    del payload["legalConsentOptions"]
    payload["fields"].append({"objectTypeId": "0-1", "name": "newsletter_opt_in", "value": "true"})
    config = hubspot_config(consent_fields={"newsletter_opt_in": "marketing-email-v1"})
    client = await make_client(config)
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT consent_id FROM crm.consents") == "marketing-email-v1"
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"webhook-signature": "v1,dGhpcyBpcyBub3QgdGhlIHNpZ25hdHVyZQ=="},
        lambda h: h | {"webhook-id": "msg_other"},
        lambda h: {k: v for k, v in h.items() if k != "webhook-signature"},
        lambda h: {k: v for k, v in h.items() if k != "webhook-id"},
        lambda h: h | {"webhook-signature": "garbage"},
    ],
    ids=["wrong", "other-id", "missing-signature", "missing-id", "malformed"],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=mangle(headers))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_a_body_signed_with_another_secret_gets_401(make_client):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE, secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (await client.post(URL, data=body, headers=headers)).status == 401


async def test_an_expired_timestamp_gets_401(make_client):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE, timestamp=time.time() - 600)
    assert (await client.post(URL, data=body, headers=headers)).status == 401


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client):
    new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    client = await make_client(hubspot_config(secrets=(SECRET, new)))
    for secret in (SECRET, new):
        body, headers = signed(SAMPLE, secret=secret)
        assert (await client.post(URL, data=body, headers=headers)).status == 201


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE, msg_id="msg_2Lh9KsUp7ctbDBTm1Q2ZyXqOh3x")
    first = await (await client.post(URL, data=body, headers=headers)).json()
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 2


async def test_a_body_without_contact_fields_gets_422(make_client, db):
    payload = sample()
    payload["fields"] = [{"objectTypeId": "0-1", "name": "firstname", "value": "Jeff"}]
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert set((await response.json())["fields"]) == {"email", "phone"}
    assert (
        await db.fetchval("SELECT count(*) FROM ingest.consent_texts WHERE consent_id LIKE 'hubspot:%'") == 0
    )


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda c: c.update(text=""), "legalConsentOptions.consent.text"),
        (lambda c: c.pop("text"), "legalConsentOptions.consent.text"),
        (lambda c: c.update(text=["I agree"]), "legalConsentOptions.consent.text"),
        (lambda c: c.update(text="I agree\x00"), "legalConsentOptions.consent.text"),
        (lambda c: c.update(text="I agree \ud800"), "legalConsentOptions.consent.text"),
        (lambda c: c["communications"][0].pop("text"), "legalConsentOptions.consent.communications.0.text"),
        (
            lambda c: c["communications"][0].update(subscriptionTypeId="news"),
            "legalConsentOptions.consent.communications.0.subscriptionTypeId",
        ),
        (
            lambda c: c["communications"][0].update(subscriptionTypeId=True),
            "legalConsentOptions.consent.communications.0.subscriptionTypeId",
        ),
        (
            lambda c: c["communications"][0].update(subscriptionTypeId="999\n"),
            "legalConsentOptions.consent.communications.0.subscriptionTypeId",
        ),
        (
            lambda c: c["communications"][0].update(subscriptionTypeId=-1),
            "legalConsentOptions.consent.communications.0.subscriptionTypeId",
        ),
        (lambda c: c.update(communications={"value": True}), "legalConsentOptions.consent.communications"),
        (lambda c: c.update(communications=["yes"]), "legalConsentOptions.consent.communications.0"),
    ],
)
async def test_a_consent_item_whose_words_cannot_be_recorded_gets_422(make_client, db, mangle, field):
    payload = sample()
    mangle(payload["legalConsentOptions"]["consent"])
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert field in (await response.json())["fields"]
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_consent_answer_that_is_not_a_yes_or_no_gets_422(make_client, db):
    payload = sample()
    payload["legalConsentOptions"]["consent"]["consentToProcess"] = "maybe"
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert list((await response.json())["fields"]) == [
        f"consents.hubspot:process:contact:{short_hash(PROCESS_TEXT)}"
    ]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.update(fields="email=example@example.com"),
        lambda p: p.update(
            fields=[None, 1, "x", [], {"name": None}, {"name": 5, "value": "x"}] + p["fields"]
        ),
        lambda p: p["fields"][0].update(value=["example@example.com"]),
        lambda p: p["fields"][0].update(value={"email": "example@example.com"}),
        lambda p: p["fields"][0].update(value=None),
        lambda p: p["fields"][0].update(objectTypeId=1),
        lambda p: p["fields"][1].update(value=42),
        lambda p: p["fields"][1].update(value="<b>Jeff</b><script>alert(1)</script>"),
        lambda p: p.update(context="x", submittedAt=[], skipValidation="yes"),
        lambda p: p.update(legalConsentOptions=None),
        lambda p: p.update(legalConsentOptions={"consent": None, "legitimateInterest": 5}),
        lambda p: p.update(legalConsentOptions="yes"),
        lambda p: p["legalConsentOptions"].update(consent=[True]),
        lambda p: p["legalConsentOptions"]["consent"].update(communications=None),
        lambda p: p["legalConsentOptions"]["consent"]["communications"][0].update(subscriptionTypeId="999"),
        lambda p: p["legalConsentOptions"]["consent"]["communications"][0].update(subscriptionTypeId=10**30),
        lambda p: p["legalConsentOptions"]["consent"]["communications"][0].update(value={"x": 1}),
        lambda p: p["legalConsentOptions"]["consent"]["communications"].append(
            p["legalConsentOptions"]["consent"]["communications"][0] | {"value": False}
        ),
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, mangle):
    client = await make_client(hubspot_config())
    payload = sample()
    mangle(payload)
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (201, 422)


async def test_the_same_item_ticked_and_unticked_is_not_granted(make_client, db):
    payload = sample()
    communications = payload["legalConsentOptions"]["consent"]["communications"]
    communications.append(communications[0] | {"value": False})
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False


@pytest.mark.parametrize(("body", "status"), [(b"{not json", 400), (b"[]", 400), (b'{"fields": []}', 422)])
async def test_a_signed_body_that_is_not_a_json_object_gets_400(make_client, body, status):
    client = await make_client(hubspot_config())
    response = await client.post(URL, data=body, headers=sign_standard(body, secret=SECRET))
    assert response.status == status


async def test_a_body_that_is_not_json_content_gets_415(make_client):
    client = await make_client(hubspot_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=headers | {"Content-Type": "text/plain"})
    assert response.status == 415


def test_parse_returns_the_words_with_their_purposes_and_the_webhook_id_as_delivery_id():
    source = hubspot_config().sources["hubspot-site"]
    body, headers = signed(SAMPLE, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek")
    items = ADAPTER.parse(source, request(body, headers))
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, RawSubmission)
    assert item.delivery_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert item.fields == {"email": "example@example.com", "first_name": "Jeff"}
    process = f"hubspot:process:contact:{short_hash(PROCESS_TEXT)}"
    marketing = f"hubspot:sub999:direct_marketing:{short_hash(MARKETING_TEXT)}"
    assert item.consents == {process: True, marketing: True}
    assert item.inline_consent_texts == {
        process: ("contact", PROCESS_TEXT),
        marketing: ("direct_marketing", MARKETING_TEXT),
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"options": {"process_purpose": "sales"}}, "sources.hubspot-site.options.process_purpose: one of"),
        ({"options": {"process_purpose": 1}}, "sources.hubspot-site.options.process_purpose: one of"),
        (
            {"options": {"subscription_purposes": "direct_marketing"}},
            "options.subscription_purposes: expected a table",
        ),
        (
            {"options": {"subscription_purposes": {"news": "direct_marketing"}}},
            "options.subscription_purposes.news: a subscriptionTypeId",
        ),
        (
            {"options": {"subscription_purposes": {"999": "newsletter"}}},
            "options.subscription_purposes.999: one of",
        ),
        ({"options": {"legitimate_interest": True}}, "options.legitimate_interest: unknown option"),
        ({"fields": {"email": " "}}, "sources.hubspot-site.fields.email: must name a provider field"),
    ],
)
def test_options_that_cannot_work_are_a_config_error_naming_the_key(source, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        hubspot_config(**source)


# --- legitimateInterest (issue 16.1) ----------------------------------------------------------

INTEREST = json.loads((FIXTURES / "submit_form-legitimate_interest.json").read_text())


def test_the_legitimate_interest_notice_is_read_with_its_words_basis_and_mapped_purpose():
    source = hubspot_config(options={"subscription_purposes": {"999": "customer_relationship"}}).sources[
        "hubspot-site"
    ]
    from ingest.adapters.hubspot import read_notices
    from ingest.domain import Notice

    assert read_notices(INTEREST["legalConsentOptions"], source) == (
        Notice(
            purpose="customer_relationship",
            text="Legitimate interest consent text",
            applies=True,
            provider_basis="LEAD",
            subscription_type_id="999",
        ),
    )
    unmapped = hubspot_config().sources["hubspot-site"]
    assert read_notices(INTEREST["legalConsentOptions"], unmapped)[0].purpose == "direct_marketing"
    assert read_notices(OPENAPI["legalConsentOptions"], unmapped)[0].provider_basis == "CUSTOMER"


async def test_a_legitimate_interest_only_body_is_stored_without_a_consent_event(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(INTEREST)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 0  # not consent


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": ""}, "legalConsentOptions.legitimateInterest.text"),
        ({"text": "a\x00b"}, "legalConsentOptions.legitimateInterest.text"),
        ({"subscriptionTypeId": "abc"}, "legalConsentOptions.legitimateInterest.subscriptionTypeId"),
        ({"value": "maybe"}, "legalConsentOptions.legitimateInterest.value"),
        ({"legalBasis": "<b>LEAD</b>"}, "legalConsentOptions.legitimateInterest.legalBasis"),
    ],
)
async def test_a_legitimate_interest_notice_that_cannot_be_recorded_as_shown_gets_422(
    make_client, db, change, field
):
    # The site's own code posts these bodies and can fix them (DESIGN §8): refused, never dropped.
    payload = copy.deepcopy(INTEREST)
    payload["legalConsentOptions"]["legitimateInterest"].update(change)
    client = await make_client(hubspot_config())
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert list((await response.json())["fields"]) == [field]
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_recorded_notice_is_exported_with_its_submission_and_erased_with_the_contact(
    make_client, db, app_dsn
):
    import asyncpg

    from ingest.store.notices import insert_notices
    from tests.support import ADMIN_TOKEN

    client = await make_client(hubspot_config())
    body, headers = signed(INTEREST)
    created = await (await client.post(URL, data=body, headers=headers)).json()
    source = hubspot_config().sources["hubspot-site"]
    from ingest.adapters.hubspot import read_notices

    [notice] = read_notices(INTEREST["legalConsentOptions"], source)
    # The delivery itself stored it (as the service's role); one more, straight through
    # the store as that role, shows SELECT and INSERT are enough.
    runtime = await asyncpg.connect(app_dsn)
    try:
        async with runtime.transaction():
            await insert_notices(
                runtime, [(uuid.UUID(created["submission_id"]), notice)], [datetime.now(UTC)]
            )
    finally:
        await runtime.close()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    exported = await (
        await client.get("/v1/subjects", params={"email": "example@example.com"}, headers=admin)
    ).json()
    first, second = exported["contacts"][0]["submissions"][0]["notices"]
    assert {k: v for k, v in first.items() if k != "shown_at"} == {
        k: v for k, v in second.items() if k != "shown_at"
    }
    notice_row = first
    assert {k: v for k, v in notice_row.items() if k != "shown_at"} == {
        "purpose": "direct_marketing",
        "lawful_basis": "legitimate_interest",
        "provider_basis": "LEAD",
        "subscription_type_id": "999",
        "applies": True,
        "text": "Legitimate interest consent text",
    }
    response = await client.delete("/v1/subjects", params={"email": "example@example.com"}, headers=admin)
    assert response.status == 200
    assert await db.fetchval("SELECT count(*) FROM ingest.submission_notices") == 0


async def test_a_legitimate_interest_delivery_stores_its_notice(make_client, db):
    client = await make_client(hubspot_config())
    body, headers = signed(INTEREST)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert (
        await db.fetchval("SELECT text FROM ingest.submission_notices") == "Legitimate interest consent text"
    )


async def test_a_mapped_property_missing_from_a_body_is_counted_by_its_config_key(make_client, db):
    from tests.adapters._metrics import metric_value

    client = await make_client(hubspot_config(fields={"message": "how_can_we_help"}))
    body, headers = signed(sample())
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    name = "ingest_mapped_field_absent_total"
    assert await metric_value(client, name, source="hubspot-site", field="fields.message") == 1
