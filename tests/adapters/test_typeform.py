"""Typeform form_response webhooks.

Payload: tests/fixtures/typeform/form_response.json, from Typeform's "Example webhook
payload" (https://www.typeform.com/developers/webhooks/example-payload/). Signature per
"Secure your webhooks" (https://www.typeform.com/developers/webhooks/secure-your-webhooks/).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.base import Ignored
from ingest.adapters.typeform import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature
from tests.adapters._metrics import metric_value
from tests.support import config_with_source, dump_database

SECRET = "a8f5f167f44f4964e6c998dee827110c3aa3b8f0"
URL = "/v1/forms/city-survey"
SAMPLE = json.loads((Path(__file__).parents[1] / "fixtures" / "typeform" / "form_response.json").read_text())


def typeform_config(secrets=(SECRET,), **source):
    names = [f"TF_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "city-survey",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="typeform",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def signed(payload: object, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, indent=2).encode() if not isinstance(payload, bytes) else payload
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"Typeform-Signature": f"sha256={digest}", "Content-Type": "application/json"}


def sample(**changes) -> dict:
    payload = copy.deepcopy(SAMPLE)
    payload.update(changes)
    return payload


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type=headers.get("Content-Type", ""),
        received_at=datetime.now(UTC),
    )


async def test_the_documented_form_response_stores_only_name_email_and_message(make_client, db):
    client = await make_client(typeform_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel FROM crm.submissions s "
        "JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Laura",  # "What is your first name?" (short_text): a first name by its title
        "email": "laura@example.com",
        "phone": None,
        "message": "It's cold right now! I live in an older medium-sized city with a university. "
        "Geographically, the area is hilly.",
        "source": "city-survey",
        "channel": "form",
    }
    stored = await dump_database(db)
    for dropped in (
        "abc123456",
        "a3a12ec67a1365927098a606107fac15",
        "London",
        "Sydney",
        "2005-10-15",
        "calendly",
    ):
        assert dropped not in stored  # hidden field, response token, choices, date, URL
    assert "typeform" not in stored  # the variable `name` = "typeform"


def test_the_computed_signature_vector_verifies():
    # Brief section 7: HMAC-SHA256("test_secret", body), base64, "sha256=" prefix (computed, not published).
    body = b'{"event_id":"LtWXD3crgy","event_type":"form_response"}'
    source = typeform_config(secrets=("test_secret",)).sources["city-survey"]
    headers = {
        "Typeform-Signature": "sha256=n3nfN41Qq3tAGvfd97TwHHlMUZlM7+84CSrPo4257Tk=",
        "Content-Type": "application/json",
    }
    # The signature holds; the body has no form_response: acknowledged, never a 400 Typeform retries.
    assert ADAPTER.parse(source, request(body, headers)) == [Ignored("unreadable_payload", "LtWXD3crgy")]
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request(body + b" ", headers))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"Typeform-Signature": "sha256=" + base64.b64encode(b"x" * 32).decode()},
        lambda h: h | {"Typeform-Signature": h["Typeform-Signature"].removeprefix("sha256=")},
        lambda h: h | {"Typeform-Signature": "sha256=!!!not base64!!!"},
        lambda h: h | {"Typeform-Signature": "sha256="},
        lambda h: h | {"Typeform-Signature": h["Typeform-Signature"].replace("sha256=", "sha1=")},
        lambda h: {k: v for k, v in h.items() if k != "Typeform-Signature"},
    ],
    ids=["wrong", "no-prefix", "bad-base64", "empty", "other-algorithm", "missing"],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(typeform_config())
    body, headers = signed(SAMPLE)
    response = await client.post(URL, data=body, headers=mangle(headers))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_a_signature_over_another_body_gets_401(make_client):
    client = await make_client(typeform_config())
    _, headers = signed(SAMPLE)
    body, _ = signed(sample(event_id="other"))
    assert (await client.post(URL, data=body, headers=headers)).status == 401


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client):
    new = "new-secret-0123456789"
    client = await make_client(typeform_config(secrets=(SECRET, new)))
    for i, secret in enumerate((SECRET, new)):
        body, headers = signed(sample(event_id=f"event-{i}"), secret=secret)
        assert (await client.post(URL, data=body, headers=headers)).status == 201


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(typeform_config())
    body, headers = signed(SAMPLE)
    first = await (await client.post(URL, data=body, headers=headers)).json()
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_a_partial_response_event_is_acknowledged_and_ignored(make_client, db):
    client = await make_client(typeform_config())
    body, headers = signed(sample(event_type="form_response_partial"))
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_response_without_email_or_phone_is_acknowledged_ignored_and_counted(make_client, db):
    # Issue 16.2: Typeform retries a failed delivery for hours; this one can never succeed.
    client = await make_client(typeform_config())
    payload = sample()
    payload["form_response"]["answers"] = [
        a for a in payload["form_response"]["answers"] if a["field"]["type"] != "email"
    ]
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    labels = {"source": "city-survey", "reason": "no_contact_details"}
    assert await metric_value(client, "ingest_ignored_deliveries_total", **labels) == 1


async def test_a_mapped_ref_missing_from_a_response_is_counted_by_its_config_key(make_client, db):
    # Issue 16.4: `fields` names a ref the form no longer has; Typeform omits unanswered questions too.
    client = await make_client(typeform_config(fields={"message": "renamed_ref"}))
    body, headers = signed(sample())
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    name = "ingest_mapped_field_absent_total"
    assert await metric_value(client, name, source="city-survey", field="fields.message") == 1


async def test_a_phone_number_answer_is_the_phone(make_client, db):
    client = await make_client(typeform_config())
    payload = sample()
    payload["form_response"]["answers"].append(
        {
            "type": "phone_number",
            "phone_number": "+358401234567",
            "field": {"id": "x1", "type": "phone_number"},
        }
    )
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT phone FROM crm.contacts") == "+358401234567"


async def test_configured_refs_and_titles_choose_the_fields_and_the_legal_answer_grants_consent(
    make_client, db
):
    config = typeform_config(
        fields={
            "name": "readable_ref_short_text",
            "message": "WHEN DID YOU MOVE TO THE PLACE WHERE YOU LIVE?",  # a title, any case
        },
        consent_fields={"readable_ref_legal": "marketing-email-v1"},
    )
    client = await make_client(config)
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.marketing_allowed, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {"name": "Laura", "marketing_allowed": True, "message": "2005-10-15"}


async def test_an_unticked_yes_no_answer_records_consent_as_not_granted(make_client, db):
    config = typeform_config(consent_fields={"readable_ref_yes_no": "marketing-email-v1"})
    client = await make_client(config)
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert (
        await db.fetchval("SELECT granted FROM crm.consents WHERE consent_id = 'marketing-email-v1'") is False
    )


async def test_answers_carrying_their_ref_and_choice_ids_are_matched_without_a_definition(make_client, db):
    # Current payloads put `ref` on answers and ids on choices; a definition is not needed.
    payload = {
        "event_id": "01KBYWTTXW2SXX86TBH2SGNCCS",
        "event_type": "form_response",
        "form_response": {
            "answers": [
                {
                    "type": "email",
                    "email": "jo@example.fi",
                    "field": {"id": "a", "ref": "work_email", "type": "email"},
                },
                {"type": "text", "text": "Jo", "field": {"id": "b", "ref": "nick", "type": "short_text"}},
                {
                    "type": "choice",
                    "choice": {"id": "pBVm1w4quPjA", "label": "Yes please", "ref": "50a3bd14"},
                    "field": {"id": "c", "ref": "news", "type": "multiple_choice"},
                },
            ]
        },
    }
    config = typeform_config(fields={"name": "nick"}, consent_fields={"news": "marketing-email-v1"})
    client = await make_client(config)
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow("SELECT name, email, marketing_allowed FROM crm.contacts")
    assert dict(row) == {"name": "Jo", "email": "jo@example.fi", "marketing_allowed": True}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p["form_response"].update(answers="not a list"),
        lambda p: p["form_response"].update(answers=[None, 1, "x", [], {"field": None}, {"type": "email"}]),
        lambda p: p["form_response"].update(definition=[]),
        lambda p: p["form_response"]["definition"].update(fields={"id": 1}),
        lambda p: p["form_response"]["answers"][1].update(email=None),
        lambda p: p["form_response"]["answers"][1].update(email=["laura@example.com"]),
        lambda p: p["form_response"]["answers"][1].update(email={"address": "laura@example.com"}),
        lambda p: p["form_response"]["answers"][1].update(email=4.5),
        lambda p: p["form_response"]["answers"][2].update(text=True),
        lambda p: p["form_response"]["answers"][4].update(choices={"labels": [None, 3, {"x": 1}]}),
        lambda p: p["form_response"]["answers"][7].update(choice="London"),
        lambda p: p["form_response"]["answers"][0]["field"].update(id=["DlXFaesGBpoF"]),
        lambda p: p["form_response"]["answers"][0].update(text="<b>Hi</b>\x00<script>alert(1)</script>"),
        lambda p: p["form_response"].update(hidden="x", variables=7, calculated=None),
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, mangle):
    client = await make_client(typeform_config(consent_fields={"London": "marketing-email-v1"}))
    payload = sample()
    mangle(payload)
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (201, 202)


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"event_id": None}, 202),
        ({"event_id": 42}, 201),
        ({"event_id": "x" * 201}, 202),
        ({"form_response": []}, 202),
        ({"event_type": None}, 202),
    ],
)
async def test_an_envelope_without_a_usable_event_id_or_response_is_acknowledged(
    make_client, changes, status
):
    client = await make_client(typeform_config())
    body, headers = signed(sample(**changes))
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == status
    if status == 202 and "event_type" not in changes:
        assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}


async def test_a_signed_body_that_is_not_json_is_acknowledged_as_unreadable(make_client):
    client = await make_client(typeform_config())
    body, headers = signed(b"{not json")
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}


def test_parse_returns_one_submission_with_the_event_id_as_delivery_id():
    source = typeform_config().sources["city-survey"]
    items = ADAPTER.parse(source, request(*signed(SAMPLE)))
    assert len(items) == 1
    assert isinstance(items[0], RawSubmission)
    assert items[0].delivery_id == "LtWXD3crgy"
    assert set(items[0].fields) == {"first_name", "email", "message"}
    ignored = ADAPTER.parse(source, request(*signed(sample(event_type="form_response_partial"))))
    assert ignored == [Ignored("unsupported_event", "LtWXD3crgy")]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"fields": {"email": " "}}, "sources.city-survey.fields.email: must name a provider field"),
        ({"fields": {"name": "ref_a", "first_name": "REF_A"}}, "sources.city-survey.fields.first_name"),
        ({"consent_fields": {"": "marketing-email-v1"}}, 'sources.city-survey.consent_fields."": must name'),
        (
            {"fields": {"email": "ref_a"}, "consent_fields": {"ref_a": "marketing-email-v1"}},
            "sources.city-survey.consent_fields.ref_a: also mapped to fields.email",
        ),
        ({"options": {"partial": True}}, "sources.city-survey.options.partial: unknown option"),
    ],
)
def test_a_mapping_that_cannot_work_is_a_config_error_naming_the_key(source, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        typeform_config(**source)
