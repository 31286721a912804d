"""Webflow form_submission webhooks (Data API v2).

Payloads: tests/fixtures/webflow/, from Webflow's "Working with webhooks"
(https://developers.webflow.com/data/docs/working-with-webhooks): the "JSON Example"
and the "Step 3. Send a test submission" body. Signature per the same page.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.webflow import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import InvalidSignature
from tests.adapters._metrics import metric_value
from tests.support import config_with_source, dump_database

# The secretKey of the page's sample "create webhook" response, used here as a test secret.
SECRET = "2b4acfd1c5518bf03c73a4889d197d77251353857c22694bf150b9e3402ba15f"
URL = "/v1/forms/webflow-contact"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webflow"
CONTACT_US = json.loads((FIXTURES / "form_submission.json").read_text())
TEST_SUBMISSION = (FIXTURES / "form_submission-test_submission.json").read_bytes()


def webflow_config(secrets=(SECRET,), **source):
    names = [f"WEBFLOW_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "webflow-contact",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="webflow",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def sign(body: bytes, secret: str = SECRET, timestamp_ms: int | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    digest = hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "x-webflow-timestamp": timestamp,
        "x-webflow-signature": digest,
        "Content-Type": "application/json",
    }


def compact(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def contact_us(**data) -> dict:
    payload = copy.deepcopy(CONTACT_US)
    payload["payload"]["data"].update(data)
    return payload


def request(body: bytes, headers: dict[str, str], received_at: datetime | None = None) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type="application/json",
        received_at=received_at or datetime.now(UTC),
    )


async def test_the_documented_test_submission_is_stored_with_its_email(make_client, db):
    client = await make_client(webflow_config())
    response = await client.post(URL, data=TEST_SUBMISSION, headers=sign(TEST_SUBMISSION))
    assert response.status == 200
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message, s.source FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": None,
        "email": "hello@gmail.com",  # field "Email 2": an e-mail by its name
        "phone": None,
        "message": None,
        "source": "webflow-contact",
    }
    stored = await dump_database(db)
    for dropped in ("Email Form", "65427cf400e02b306eaa049c", "65429eadebe8a9f3a30f62d7"):
        assert dropped not in stored


async def test_the_documented_contact_us_sample_keeps_the_lead_and_drops_its_fictional_555_phone_number(
    make_client, db
):
    # A 422 would never succeed on Webflow's retries and gets the webhook deactivated:
    # the invalid phone is dropped, the valid e-mail and name are kept.
    client = await make_client(webflow_config())
    body = json.dumps(CONTACT_US, indent=2).encode()
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    row = await db.fetchrow("SELECT name, email, phone FROM crm.contacts")
    assert dict(row) == {"name": "Zaphod Beeblebrox", "email": "zaphod@heartofgold.ai", "phone": None}


async def test_a_delivery_whose_contact_fields_are_all_invalid_is_answered_200_ignored_and_counted(
    make_client, db
):
    # Issue 16.2: a 422 is retried three times, then Webflow deactivates the webhook.
    client = await make_client(webflow_config())
    payload = contact_us(email="not-an-address")  # and the sample's fictional 555 phone number
    body = json.dumps(payload).encode()
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "invalid_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    labels = {"source": "webflow-contact", "reason": "invalid_contact_details"}
    assert await metric_value(client, "ingest_ignored_deliveries_total", **labels) == 1


async def test_the_contact_us_sample_with_a_real_number_stores_name_email_and_phone(make_client, db):
    client = await make_client(webflow_config())
    body = json.dumps(contact_us(**{"Phone Number": 358401234567})).encode()  # a JSON number, as documented
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    row = await db.fetchrow("SELECT name, email, phone FROM crm.contacts")
    assert dict(row) == {
        "name": "Zaphod Beeblebrox",
        "email": "zaphod@heartofgold.ai",
        "phone": "+358401234567",
    }
    stored = await dump_database(db)
    for dropped in (
        "Contact Us",
        "285042f7-d554-dc7f-102c-aa10d6a2d2c4",
        "4e038d2c-6a1e-4953-7be9-a59a2b453177",
    ):
        assert dropped not in stored


def test_the_computed_signature_vector_verifies():
    # Brief section 7: hex HMAC-SHA256("test_secret", "1722370035277:" + body) (computed, not published).
    body = b'{"triggerType":"form_submission","payload":{"id":"6321ca84df3949bfc6752327"}}'
    headers = {
        "x-webflow-timestamp": "1722370035277",
        "x-webflow-signature": "df9f57e48aa4d3eb266d15df8bcc4d02617872d9855fd482bbc45c1bb84ed263",
    }
    source = webflow_config(secrets=("test_secret",)).sources["webflow-contact"]
    at = datetime.fromtimestamp(1722370035.277 + 60, tz=UTC)
    [item] = ADAPTER.parse(source, request(body, headers, received_at=at))
    assert isinstance(item, RawSubmission)
    assert item.delivery_id == "6321ca84df3949bfc6752327"
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(
            source, request(body, headers, received_at=datetime.fromtimestamp(1722370035.277 + 301, tz=UTC))
        )


@pytest.mark.parametrize("age_seconds", [301, -301, 10 * 365 * 86400])
async def test_a_timestamp_outside_five_minutes_gets_401(make_client, age_seconds):
    client = await make_client(webflow_config())
    headers = sign(TEST_SUBMISSION, timestamp_ms=int((time.time() - age_seconds) * 1000))
    response = await client.post(URL, data=TEST_SUBMISSION, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}


async def test_a_timestamp_in_seconds_is_refused_as_expired(make_client):
    client = await make_client(webflow_config())
    headers = sign(TEST_SUBMISSION, timestamp_ms=int(time.time()))
    assert (await client.post(URL, data=TEST_SUBMISSION, headers=headers)).status == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"x-webflow-signature": "0" * 64},
        lambda h: h | {"x-webflow-signature": h["x-webflow-signature"][:-2]},
        lambda h: h | {"x-webflow-signature": "z" * 64},
        lambda h: h | {"x-webflow-timestamp": str(int(h["x-webflow-timestamp"]) + 1)},
        lambda h: h | {"x-webflow-timestamp": "soon"},
        lambda h: h | {"x-webflow-timestamp": "-1"},
        lambda h: {k: v for k, v in h.items() if k != "x-webflow-signature"},
        lambda h: {k: v for k, v in h.items() if k != "x-webflow-timestamp"},
    ],
    ids=[
        "wrong",
        "short",
        "not-hex",
        "other-timestamp",
        "bad-timestamp",
        "negative",
        "no-signature",
        "no-timestamp",
    ],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(webflow_config())
    response = await client.post(URL, data=TEST_SUBMISSION, headers=mangle(sign(TEST_SUBMISSION)))
    assert response.status == 401
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_an_uppercase_hex_signature_verifies(make_client):
    client = await make_client(webflow_config())
    headers = sign(TEST_SUBMISSION)
    headers["x-webflow-signature"] = headers["x-webflow-signature"].upper()
    assert (await client.post(URL, data=TEST_SUBMISSION, headers=headers)).status == 200


async def test_a_signature_over_the_compact_json_of_a_pretty_body_verifies(make_client):
    # Webflow's own samples sign JSON.stringify(req.body), not the bytes received.
    client = await make_client(webflow_config())
    payload = json.loads(TEST_SUBMISSION)
    headers = sign(compact(payload))
    response = await client.post(URL, data=json.dumps(payload, indent=4).encode(), headers=headers)
    assert response.status == 200


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client):
    client = await make_client(webflow_config(secrets=(SECRET, "new-client-secret")))
    for i, secret in enumerate((SECRET, "new-client-secret")):
        payload = json.loads(TEST_SUBMISSION)
        payload["payload"]["id"] = f"submission-{i}"
        body = compact(payload)
        assert (await client.post(URL, data=body, headers=sign(body, secret=secret))).status == 200


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(webflow_config())
    first = await (await client.post(URL, data=TEST_SUBMISSION, headers=sign(TEST_SUBMISSION))).json()
    again = await client.post(URL, data=TEST_SUBMISSION, headers=sign(TEST_SUBMISSION))
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_another_trigger_type_is_acknowledged_and_ignored(make_client, db):
    client = await make_client(webflow_config())
    body = compact({"triggerType": "site_publish", "payload": {"siteId": "65427cf400e02b306eaa049c"}})
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_submission_without_email_or_phone_is_answered_200_ignored(make_client, db):
    client = await make_client(webflow_config())
    payload = copy.deepcopy(CONTACT_US)
    del payload["payload"]["data"]["email"], payload["payload"]["data"]["Phone Number"]
    body = compact(payload)
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_configured_field_names_and_a_ticked_checkbox_map_name_message_and_consent(make_client, db):
    config = webflow_config(
        fields={
            "name": "your full NAME",
            "email": "285042f7-d554-dc7f-102c-aa10d6a2d2c6",
            "message": "Question",
        },
        consent_fields={"Newsletter": "marketing-email-v1"},
    )
    client = await make_client(config)
    payload = contact_us(
        **{"Your full name": "Arthur Dent", "Question": "Where is my towel?", "Newsletter": True}
    )
    del payload["payload"]["data"]["Phone Number"]
    body = compact(payload)
    assert (await client.post(URL, data=body, headers=sign(body))).status == 200
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.marketing_allowed, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Arthur Dent",
        "email": "zaphod@heartofgold.ai",  # by the schema's fieldElementId
        "marketing_allowed": True,
        "message": "Where is my towel?",
    }


async def test_a_mapped_field_missing_from_a_delivery_is_counted_by_its_config_key_never_its_value(
    make_client, db
):
    # Issue 16.4: the form's "Question" field was renamed in the Designer; the lead is still stored.
    config = webflow_config(
        fields={"message": "Question", "email": "email"}, consent_fields={"Newsletter": "marketing-email-v1"}
    )
    client = await make_client(config)
    body = compact(contact_us(**{"Your question": "Where is my towel?"}))
    assert (await client.post(URL, data=body, headers=sign(body))).status == 200
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1
    name = "ingest_mapped_field_absent_total"
    source = "webflow-contact"
    assert await metric_value(client, name, source=source, field="fields.message") == 1
    assert await metric_value(client, name, source=source, field="consent_fields.Newsletter") == 1
    assert await metric_value(client, name, source=source, field="fields.email") == 0  # it was there
    metrics = await (await client.get("/metrics")).text()
    assert "towel" not in metrics
    assert "zaphod" not in metrics


@pytest.mark.parametrize("value", [False, "false", "", None, "off"])
async def test_an_unticked_or_absent_checkbox_is_recorded_as_not_granted(make_client, db, value):
    client = await make_client(webflow_config(consent_fields={"Newsletter": "marketing-email-v1"}))
    payload = contact_us(**{"Phone Number": "+358401234567", "Newsletter": value})
    body = compact(payload)
    assert (await client.post(URL, data=body, headers=sign(body))).status == 200
    assert await db.fetchval("SELECT granted FROM crm.consents") is False


@pytest.mark.parametrize(
    "data",
    [
        "not an object",
        None,
        [],
        {"email": ["a@example.fi", "b@example.fi"]},
        {"email": {"value": "a@example.fi"}},
        {"email": 12345},
        {"email": True},
        {"email": "a@example.fi", "Phone Number": 1.5e300},
        {"email": "a@example.fi", "Phone Number": -1},
        {"email": "a@example.fi", "Message": "<img src=x onerror=alert(1)>\x07"},
        {"email": "a@example.fi", "First Name": ["Zaphod"]},
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, data):
    client = await make_client(webflow_config(consent_fields={"Newsletter": "marketing-email-v1"}))
    payload = copy.deepcopy(CONTACT_US)
    payload["payload"]["data"] = data
    payload["payload"]["schema"] = [
        None,
        3,
        {"fieldName": ["x"]},
        {"fieldName": "email", "fieldElementId": 7},
    ]
    body = compact(payload)
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"triggerType": "form_submission"},
        {"triggerType": "form_submission", "payload": []},
        {"triggerType": "form_submission", "payload": {"data": {"email": "a@example.fi"}}},
        {"triggerType": "form_submission", "payload": {"id": "bad\x00id", "data": {"email": "a@example.fi"}}},
    ],
    ids=["no-payload", "payload-list", "no-id", "control-char-id"],
)
async def test_a_signed_submission_without_a_usable_id_is_answered_200_ignored(make_client, payload):
    client = await make_client(webflow_config())
    body = compact(payload)
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}


async def test_a_signed_body_that_is_not_json_is_ignored_and_unsigned_garbage_gets_401(make_client):
    client = await make_client(webflow_config())
    response = await client.post(URL, data=b"{oops", headers=sign(b"{oops"))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "unreadable_payload"}
    headers = sign(b"{oops") | {"x-webflow-signature": "0" * 64}
    assert (await client.post(URL, data=b"{oops", headers=headers)).status == 401


async def test_every_accepted_delivery_is_answered_200_because_webflow_retries_anything_else(make_client, db):
    # "Working with webhooks": only 200 counts as delivered.
    client = await make_client(webflow_config())
    headers = sign(TEST_SUBMISSION)
    first = await client.post(URL, data=TEST_SUBMISSION, headers=headers)
    assert first.status == 200
    assert (await first.json())["status"] == "created"
    again = await client.post(URL, data=TEST_SUBMISSION, headers=headers)
    assert (again.status, (await again.json())["status"]) == (200, "duplicate")


async def test_a_wrongly_signed_body_with_a_lone_surrogate_escape_is_401_not_500(make_client, db):
    client = await make_client(webflow_config())
    body = b'{"triggerType": "form_submission", "payload": {"data": {"t": "\\ud800"}}}'
    headers = sign(b"other body")
    headers["Content-Type"] = "application/json"
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}


async def test_a_legacy_v1_form_submission_is_stored_by_its_id(make_client, db):
    # Webflow API v1 "Form Submission" webhook: the submission itself, no triggerType.
    legacy = {
        "name": "Contact Us",
        "site": "62749158efef318abc8d5a0f",
        "data": {"Name": "Zaphod Beeblebrox", "Email": "zaphod@heartofgold.ai"},
        "d": "2022-09-14T12:35:16.117Z",
        "_id": "6321ca84df3949bfc6752327",
    }
    body = json.dumps(legacy).encode()
    client = await make_client(webflow_config())
    response = await client.post(URL, data=body, headers=sign(body))
    assert response.status == 200
    row = await db.fetchrow("SELECT name, email FROM crm.contacts")
    assert dict(row) == {"name": "Zaphod Beeblebrox", "email": "zaphod@heartofgold.ai"}
    again = await client.post(URL, data=body, headers=sign(body))
    assert (await again.json())["status"] == "duplicate"
