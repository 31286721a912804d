"""Tally FORM_RESPONSE webhooks.

Payload: tests/fixtures/tally/form_response.json, the "Example webhook event" of Tally's
"Webhooks" help page (https://tally.so/help/webhooks), which has every field type.
Signature per the same page ("Add a signing secret").
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
from ingest.adapters.tally import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import InvalidSignature
from tests.adapters._metrics import metric_value
from tests.support import config_with_source, dump_database

SECRET = "tally-signing-secret-0123456789"
URL = "/v1/forms/tally-contact"
SAMPLE_BYTES = (Path(__file__).parents[1] / "fixtures" / "tally" / "form_response.json").read_bytes()
SAMPLE = json.loads(SAMPLE_BYTES)


def tally_config(secrets=(SECRET,), **source):
    names = [f"TALLY_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "tally-contact",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="tally",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def signature(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def compact(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def signed(payload: object, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = compact(payload)
    return body, {"Tally-Signature": signature(body, secret), "Content-Type": "application/json"}


def sample(**changes) -> dict:
    payload = copy.deepcopy(SAMPLE)
    payload.update(changes)
    return payload


def field(payload: dict, key: str) -> dict:
    return next(f for f in payload["data"]["fields"] if f["key"] == key)


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type="application/json",
        received_at=datetime.now(UTC),
    )


async def test_the_documented_example_event_stores_only_email_phone_and_message(make_client, db):
    client = await make_client(tally_config())
    headers = {"Tally-Signature": signature(SAMPLE_BYTES), "Content-Type": "application/json"}
    response = await client.post(URL, data=SAMPLE_BYTES, headers=headers)
    assert response.status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message, s.source FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": None,
        "email": "alice@example.com",  # INPUT_EMAIL
        "phone": "+32491223344",  # INPUT_PHONE_NUMBER
        "message": "Hello world",  # TEXTAREA
        "source": "tally-contact",
    }
    stored = await dump_database(db)
    for dropped in (
        "newsletter",  # hidden utm_campaign
        "Alice Smith",  # the payer's name
        "Tally_Icon",  # file upload
        "Swimming",  # checkboxes
        "Surf",  # multi-select
        "dwQKYm",  # respondentId
        "2wgx4n",  # responseId
        "VwbNEw",  # formId
        "12:00",
    ):
        assert dropped not in stored


def test_the_computed_signature_vector_verifies():
    # Brief section 7: base64 HMAC-SHA256("test_secret", body) (computed, not published).
    body = b'{"eventId":"a4cb511e-d513-4fa5-baee-b815d718dfd1","eventType":"FORM_RESPONSE"}'
    source = tally_config(secrets=("test_secret",)).sources["tally-contact"]
    headers = {"Tally-Signature": "WnMI4AFq3C8MtsU7r6ay2CvvnBYyTnaVm6EZnOJsvcE="}
    # The signature holds; the body has no data: never storable, so acknowledged (not a 400 Tally retries).
    parsed = ADAPTER.parse(source, request(body, headers | {"Content-Type": "application/json"}))
    assert parsed == [Ignored("unreadable_payload", "a4cb511e-d513-4fa5-baee-b815d718dfd1")]
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request(body.replace(b"FORM", b"FROM"), headers))


async def test_a_signature_over_the_compact_json_of_a_pretty_body_verifies(make_client, db):
    # The help page's example signs JSON.stringify(req.body), i.e. compact JSON, not the bytes received.
    client = await make_client(tally_config())
    pretty = json.dumps(SAMPLE, indent=2, ensure_ascii=False).encode()
    headers = {"Tally-Signature": signature(compact(SAMPLE)), "Content-Type": "application/json"}
    assert (await client.post(URL, data=pretty, headers=headers)).status == 201


async def test_non_ascii_text_verifies_on_both_raw_and_compact_bodies(make_client, db):
    client = await make_client(tally_config())
    payload = sample()
    field(payload, "question_3Nrpl3")["value"] = "Hyvää päivää, ☃"
    escaped = json.dumps(payload).encode()  # \u escapes, spaces: only the compact form matches
    headers = {"Tally-Signature": signature(compact(payload)), "Content-Type": "application/json"}
    assert (await client.post(URL, data=escaped, headers=headers)).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "Hyvää päivää, ☃"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"Tally-Signature": signature(b"something else")},
        lambda h: h | {"Tally-Signature": signature(SAMPLE_BYTES, secret="another secret")},
        lambda h: h | {"Tally-Signature": "!!!not base64!!!"},
        lambda h: h | {"Tally-Signature": ""},
        lambda h: h | {"Tally-Signature": "sha256=" + h["Tally-Signature"]},
        lambda h: (
            h | {"Tally-Signature": hmac.new(SECRET.encode(), SAMPLE_BYTES, hashlib.sha256).hexdigest()}
        ),
        lambda h: {k: v for k, v in h.items() if k != "Tally-Signature"},
    ],
    ids=["other-body", "other-secret", "bad-base64", "empty", "prefixed", "hex", "missing"],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(tally_config())
    headers = {"Tally-Signature": signature(SAMPLE_BYTES), "Content-Type": "application/json"}
    response = await client.post(URL, data=SAMPLE_BYTES, headers=mangle(headers))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_an_unparseable_body_gets_401_unsigned_and_202_ignored_signed(make_client):
    client = await make_client(tally_config())
    headers = {"Tally-Signature": signature(b"x"), "Content-Type": "application/json"}
    assert (await client.post(URL, data=b"{oops", headers=headers)).status == 401
    headers = {"Tally-Signature": signature(b"{oops"), "Content-Type": "application/json"}
    response = await client.post(URL, data=b"{oops", headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client):
    client = await make_client(tally_config(secrets=(SECRET, "rotated-secret")))
    for i, secret in enumerate((SECRET, "rotated-secret")):
        body, headers = signed(sample(eventId=f"event-{i}"), secret=secret)
        assert (await client.post(URL, data=body, headers=headers)).status == 201


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(tally_config())
    body, headers = signed(SAMPLE)
    first = await (await client.post(URL, data=body, headers=headers)).json()
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_another_event_type_is_acknowledged_and_ignored(make_client, db):
    client = await make_client(tally_config())
    body, headers = signed(sample(eventType="FORM_DELETED"))
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_response_without_email_or_phone_is_acknowledged_ignored_and_counted(make_client, db):
    # Issue 16.2: Tally retries a 4xx five times over a day; it can never succeed.
    client = await make_client(tally_config())
    payload = sample()
    payload["data"]["fields"] = [
        f for f in payload["data"]["fields"] if f["type"] not in ("INPUT_EMAIL", "INPUT_PHONE_NUMBER")
    ]
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    # The payer's e-mail is not guessed: no contact details.
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    labels = {"source": "tally-contact", "reason": "no_contact_details"}
    assert await metric_value(client, "ingest_ignored_deliveries_total", **labels) == 1


async def test_a_response_whose_email_and_phone_are_both_invalid_is_ignored_as_invalid(make_client, db):
    client = await make_client(tally_config())
    payload = sample()
    for field in payload["data"]["fields"]:
        if field["type"] == "INPUT_EMAIL":
            field["value"] = "alice at example"
        if field["type"] == "INPUT_PHONE_NUMBER":
            field["value"] = "12"
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "invalid_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_mapped_key_missing_from_a_response_is_counted_by_its_config_key(make_client, db):
    # Issue 16.4: `fields` names a question key the form no longer has (renamed or deleted).
    client = await make_client(
        tally_config(
            fields={"message": "question_gone"}, consent_fields={"no_such_box": "marketing-email-v1"}
        )
    )
    body, headers = signed(sample())
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    name, source = "ingest_mapped_field_absent_total", "tally-contact"
    assert await metric_value(client, name, source=source, field="fields.message") == 1
    assert await metric_value(client, name, source=source, field="consent_fields.no_such_box") == 1


async def test_a_configured_key_and_label_choose_the_name_and_a_payment_email(make_client, db):
    config = tally_config(fields={"name": "question_3EKz4n", "email": "payment (EMAIL)"})
    client = await make_client(config)
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow("SELECT name, email, phone FROM crm.contacts")
    assert dict(row) == {"name": "Hello", "email": "alice@example.com", "phone": "+32491223344"}


@pytest.mark.parametrize(
    ("consent_field", "granted"),
    [
        ("Swimming", True),  # a ticked option, by its text
        ("cb33303b-4e9d-4bb3-8b51-f16acbf573fe", True),  # ... or by its id
        ("Soccer", False),  # an option left unticked
        ("Checkboxes", False),  # the field itself: several options, none reads "yes"
        ("Checkboxes (Swimming)", False),  # Tally's per-option copy is not read
        ("Surf", True),  # a multi-select option
        ("Utm_campaign", False),  # hidden fields are never read
    ],
)
async def test_checkbox_options_grant_consent_only_when_ticked(make_client, db, consent_field, granted):
    client = await make_client(tally_config(consent_fields={consent_field: "marketing-email-v1"}))
    body, headers = signed(SAMPLE)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is granted


@pytest.mark.parametrize(("ticked", "granted"), [(["opt-1"], True), ([], False), (None, False)])
async def test_a_single_option_consent_checkbox_named_by_its_label_grants_when_ticked(
    make_client, db, ticked, granted
):
    payload = sample()
    payload["data"]["fields"].append(
        {
            "key": "question_consent",
            "label": "Marketing",
            "type": "CHECKBOXES",
            "value": ticked,
            "options": [{"id": "opt-1", "text": "Send me QualityDesk news by e-mail"}],
        }
    )
    payload["data"]["fields"].append(
        {
            "key": "question_consent_opt-1",
            "label": "Marketing (Send me…)",
            "type": "CHECKBOXES",
            "value": True,
        }
    )
    client = await make_client(tally_config(consent_fields={"marketing": "marketing-email-v1"}))
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is granted


@pytest.mark.parametrize(("value", "granted"), [(True, True), (False, False), (None, False), ("true", True)])
async def test_a_checkbox_field_is_a_consent_when_true(make_client, db, value, granted):
    payload = sample()
    payload["data"]["fields"].append(
        {"key": "question_legal", "label": "Terms", "type": "CHECKBOX", "value": value}
    )
    client = await make_client(tally_config(consent_fields={"question_legal": "marketing-email-v1"}))
    body, headers = signed(payload)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is granted


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p["data"].update(fields="not a list"),
        lambda p: p["data"].update(
            fields=[None, 1, "x", [], {"key": None}, {"key": 5, "value": "a@example.fi"}]
        ),
        lambda p: field(p, "question_w4Q4Xn").update(value=None),
        lambda p: field(p, "question_w4Q4Xn").update(value=["alice@example.com"]),
        lambda p: field(p, "question_w4Q4Xn").update(value={"email": "alice@example.com"}),
        lambda p: field(p, "question_3jZaa3").update(value=32491223344),
        lambda p: field(p, "question_3jZaa3").update(value=True),
        lambda p: field(p, "question_wQ1K7w").update(
            options="x", value="cb33303b-4e9d-4bb3-8b51-f16acbf573fe"
        ),
        lambda p: field(p, "question_wQ1K7w").update(
            options=[None, {"id": 1, "text": None}], value=[None, 2]
        ),
        lambda p: field(p, "question_3Nrpl3").update(value="<p>Hi</p>\x00\u202e"),
        lambda p: field(p, "question_3Nrpl3").update(type=None, label=["x"]),
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, mangle):
    client = await make_client(tally_config(consent_fields={"Swimming": "marketing-email-v1"}))
    payload = sample()
    mangle(payload)
    body, headers = signed(payload)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (201, 202)


@pytest.mark.parametrize(
    "changes",
    [{"eventId": None}, {"eventId": ""}, {"eventId": {"id": 1}}, {"data": None}, {"data": "x"}],
)
async def test_a_signed_event_without_a_usable_id_or_data_is_acknowledged_as_unreadable(make_client, changes):
    client = await make_client(tally_config())
    body, headers = signed(sample(**changes))
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}


def test_parse_returns_one_submission_with_the_event_id_as_delivery_id():
    source = tally_config().sources["tally-contact"]
    [item] = ADAPTER.parse(source, request(*signed(SAMPLE)))
    assert isinstance(item, RawSubmission)
    assert item.delivery_id == "a4cb511e-d513-4fa5-baee-b815d718dfd1"
    assert item.fields == {"email": "alice@example.com", "phone": "+32491223344", "message": "Hello world"}
    assert item.consents == {}


async def test_a_wrongly_signed_body_with_a_lone_surrogate_escape_is_401_not_500(make_client, db):
    client = await make_client(tally_config())
    body = b'{"eventId": "x", "eventType": "FORM_RESPONSE", "data": {"fields": [], "t": "\\ud800"}}'
    response = await client.post(
        URL, data=body, headers={"Tally-Signature": signature(b"other"), "Content-Type": "application/json"}
    )
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
